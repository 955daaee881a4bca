//! Draws herdwatch's Grafana dashboard (charts/herdwatch/dashboards/herdwatch.json) from a
//! real Prometheus, without Grafana: each panel's PromQL runs as a range query, and the
//! answers are drawn as SVG charts placed on the dashboard's own 24-column grid, in one
//! HTML page. `scripts/render-dashboard.sh` screenshots that page into docs/dashboard.png.
//!
//! Only what the dashboard uses is understood: time series panels (lines or bars), units
//! short, ops, bytes and percentunit, legend formats, text and custom variables, and
//! `$__rate_interval` / `$__interval`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::Value;

use herdwatch_e2e::prometheus::{Prometheus, RangeSeries, DEFAULT_PROMETHEUS_URL};

/// Renders a Grafana dashboard's time series panels from Prometheus into an HTML page.
#[derive(Debug, Parser)]
struct Args {
    /// Prometheus to query.
    #[arg(long, env = "HERDWATCH_PROMETHEUS_URL", default_value = DEFAULT_PROMETHEUS_URL)]
    prometheus_url: String,
    /// The dashboard JSON.
    #[arg(
        long,
        env = "HERDWATCH_DASHBOARD",
        default_value = "charts/herdwatch/dashboards/herdwatch.json"
    )]
    dashboard: PathBuf,
    /// The HTML page to write.
    #[arg(long, env = "HERDWATCH_DASHBOARD_HTML")]
    output: PathBuf,
    /// Minutes of data up to the end.
    #[arg(long, env = "HERDWATCH_DASHBOARD_MINUTES", default_value_t = 30)]
    minutes: u32,
    /// End of the range (Unix seconds); now when not given.
    #[arg(long, env = "HERDWATCH_DASHBOARD_END")]
    end: Option<u64>,
    /// Seconds between points; also `$__interval` and `$__rate_interval`, so that bars of
    /// "per interval" panels do not overlap. At least four scrape intervals (5 s).
    #[arg(long, env = "HERDWATCH_DASHBOARD_STEP", default_value_t = 30)]
    step: u32,
    /// Draw the whole range even where Prometheus has no data yet, instead of starting
    /// where its scrapes start.
    #[arg(long, env = "HERDWATCH_DASHBOARD_FULL_RANGE")]
    full_range: bool,
    /// Page width in pixels.
    #[arg(long, env = "HERDWATCH_DASHBOARD_WIDTH", default_value_t = 1600)]
    width: u32,
}

/// Grafana's grid: 24 columns, 30 px per height unit, 8 px between panels.
const COLUMNS: f64 = 24.0;
const ROW_UNIT: f64 = 30.0;
const GAP: f64 = 8.0;
const HEADER: f64 = 64.0;
/// Grafana's classic palette.
const PALETTE: &[&str] = &[
    "#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0",
    "#508642", "#CCA300", "#447EBC", "#C15C17",
];

#[derive(Debug)]
struct Drawn {
    legend: String,
    points: Vec<(f64, f64)>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.step < 20 {
        bail!("--step must be at least 20 s (four scrapes) for rate() and increase()");
    }
    let text = std::fs::read_to_string(&args.dashboard)
        .with_context(|| format!("reading {}", args.dashboard.display()))?;
    let dashboard: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", args.dashboard.display()))?;
    let prometheus = Prometheus::new(&args.prometheus_url);
    let end = args.end.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
    }) as f64;
    let end = (end / f64::from(args.step)).floor() * f64::from(args.step);
    let mut start = end - f64::from(args.minutes) * 60.0;
    if !args.full_range {
        start = first_scrape(&prometheus, start, end, f64::from(args.step))
            .await?
            .map_or(start, |first| start.max(first - f64::from(args.step)));
    }
    let variables = variables(&dashboard, args.step);

    let width = f64::from(args.width);
    let column = (width - GAP) / COLUMNS;
    let mut body = String::new();
    let mut height = HEADER;
    let mut series_total = 0;
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let grid = &panel["gridPos"];
        let (x, y, w, h) = (
            grid["x"].as_f64().unwrap_or(0.0),
            grid["y"].as_f64().unwrap_or(0.0),
            grid["w"].as_f64().unwrap_or(12.0),
            grid["h"].as_f64().unwrap_or(8.0),
        );
        let bx = GAP + x * column;
        let by = HEADER + y * (ROW_UNIT + GAP / 3.0);
        let bw = w * column - GAP;
        let bh = h * (ROW_UNIT + GAP / 3.0) - GAP;
        height = height.max(by + bh + GAP);
        let title = panel["title"].as_str().unwrap_or("");
        if panel["type"].as_str() != Some("timeseries") {
            body.push_str(&frame(bx, by, bw, bh, title));
            body.push_str(&message(bx, by, bw, bh, "panel type not drawn"));
            continue;
        }
        let mut drawn = Vec::new();
        let mut errors = Vec::new();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            let expr = substitute(expr, &variables);
            let legend = target["legendFormat"].as_str().unwrap_or("");
            match prometheus
                .query_range(&expr, start, end, f64::from(args.step))
                .await
            {
                Ok(series) => drawn.extend(series.iter().map(|s| Drawn {
                    legend: legend_of(legend, s),
                    points: s.points(),
                })),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        if let Some(e) = errors.first() {
            bail!("panel {title:?}: {e}");
        }
        drawn.sort_by(|a, b| a.legend.cmp(&b.legend));
        series_total += drawn.len();
        let defaults = &panel["fieldConfig"]["defaults"];
        let style = Style {
            unit: defaults["unit"].as_str().unwrap_or("short").to_owned(),
            bars: defaults["custom"]["drawStyle"].as_str() == Some("bars"),
            start,
            end,
            step: f64::from(args.step),
        };
        body.push_str(&frame(bx, by, bw, bh, title));
        body.push_str(&chart(bx, by, bw, bh, &drawn, &style));
    }
    let title = dashboard["title"].as_str().unwrap_or("dashboard");
    let page = page(
        title,
        args.width,
        height.ceil() as u32,
        &body,
        &args,
        start,
        end,
    );
    std::fs::write(&args.output, page)
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!(
        "render-dashboard: {} panels, {series_total} series, {} to {} UTC, written to {}",
        dashboard["panels"].as_array().map_or(0, Vec::len),
        clock(start),
        clock(end),
        args.output.display()
    );
    // The page size, for the screenshot.
    println!("{} {}", args.width, height.ceil() as u32);
    Ok(())
}

/// When Prometheus's first scrape within the range happened (its data start), if any.
async fn first_scrape(
    prometheus: &Prometheus,
    start: f64,
    end: f64,
    step: f64,
) -> Result<Option<f64>> {
    let series = prometheus.query_range("up", start, end, step).await?;
    Ok(series
        .iter()
        .filter_map(|s| s.points().first().map(|p| p.0))
        .reduce(f64::min))
}

/// The values of the dashboard's variables: text boxes and custom or constant variables
/// take their current value; Grafana's interval variables are the step.
fn variables(dashboard: &Value, step: u32) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let (Some(name), Some(kind)) = (v["name"].as_str(), v["type"].as_str()) else {
            continue;
        };
        if kind == "datasource" {
            continue;
        }
        let value = v["current"]["value"]
            .as_str()
            .or_else(|| v["query"].as_str())
            .unwrap_or_default();
        vars.insert(name.to_owned(), value.to_owned());
    }
    vars.insert("__rate_interval".into(), format!("{step}s"));
    vars.insert("__interval".into(), format!("{step}s"));
    vars
}

/// `expr` with `${name}` and `$name` replaced, longest names first (so that `$__interval`
/// does not eat the start of `$__interval_ms`).
fn substitute(expr: &str, vars: &BTreeMap<String, String>) -> String {
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = expr.to_owned();
    for name in names {
        out = out
            .replace(&format!("${{{name}}}"), &vars[name])
            .replace(&format!("${name}"), &vars[name]);
    }
    out
}

/// A legend format (`{{label}}` placeholders) filled from a series' labels; the labels
/// themselves when there is no format.
fn legend_of(format: &str, series: &RangeSeries) -> String {
    if format.is_empty() {
        return herdwatch_e2e::prometheus::describe_labels(&series.metric);
    }
    let mut out = String::new();
    let mut rest = format;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        match after.find("}}") {
            Some(close) => {
                let name = after[..close].trim();
                out.push_str(series.metric.get(name).map_or("", String::as_str));
                rest = &after[close + 2..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

struct Style {
    unit: String,
    bars: bool,
    start: f64,
    end: f64,
    step: f64,
}

/// A value in the panel's unit, short.
fn format_value(v: f64, unit: &str) -> String {
    let scaled = |v: f64, base: f64, suffixes: &[&str]| {
        let mut v = v;
        let mut i = 0;
        while v.abs() >= base && i + 1 < suffixes.len() {
            v /= base;
            i += 1;
        }
        let digits = if v == v.trunc() {
            0
        } else if v.abs() < 10.0 {
            1
        } else {
            0
        };
        format!("{v:.digits$}{}", suffixes[i])
    };
    match unit {
        "bytes" => scaled(v, 1024.0, &[" B", " KiB", " MiB", " GiB", " TiB"]),
        "percentunit" => {
            let p = v * 100.0;
            let digits = if p != 0.0 && p.abs() < 10.0 { 1 } else { 0 };
            format!("{p:.digits$}%")
        }
        "ops" => format!("{}/s", scaled(v, 1000.0, &["", "k", "M", "G"])),
        _ => scaled(v, 1000.0, &["", "k", "M", "G"]),
    }
}

/// Round tick spacing (1, 2 or 5 times a power of ten, of 1024 for bytes) for `max`.
fn tick_step(max: f64, unit: &str) -> f64 {
    let raw = max / 4.0;
    if unit == "bytes" && raw >= 1024.0 {
        let power = 1024f64.powf(raw.log(1024.0).floor());
        let m = raw / power;
        let nice = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]
            .into_iter()
            .find(|n| *n >= m)
            .unwrap_or(1024.0);
        return nice * power;
    }
    let power = 10f64.powf(raw.log10().floor());
    let m = raw / power;
    let nice = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

/// `HH:MM` of a Unix time, UTC.
fn clock(t: f64) -> String {
    let secs = (t as i64).rem_euclid(86_400);
    format!("{:02}:{:02}", secs / 3600, secs % 3600 / 60)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn frame(x: f64, y: f64, w: f64, h: f64, title: &str) -> String {
    format!(
        r##"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" rx="3" fill="#181b1f" stroke="#2c3235"/>
<text x="{:.1}" y="{:.1}" class="title">{}</text>
"##,
        x + 10.0,
        y + 20.0,
        escape(title)
    )
}

fn message(x: f64, y: f64, w: f64, h: f64, text: &str) -> String {
    format!(
        r#"<text x="{:.1}" y="{:.1}" class="muted" text-anchor="middle">{}</text>
"#,
        x + w / 2.0,
        y + h / 2.0,
        escape(text)
    )
}

/// One panel's plot: axes, grid, series, legend.
fn chart(x: f64, y: f64, w: f64, h: f64, series: &[Drawn], style: &Style) -> String {
    let mut svg = String::new();
    let legend_rows = legend_layout(series, w - 20.0);
    let legend_height = legend_rows.len() as f64 * 16.0;
    let (left, right) = (x + 62.0, x + w - 12.0);
    let (top, bottom) = (y + 34.0, y + h - 26.0 - legend_height);
    if series.iter().all(|s| s.points.is_empty()) {
        svg.push_str(&message(x, y, w, h, "No data"));
        return svg;
    }
    let max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let tick = if max > 0.0 {
        tick_step(max, &style.unit)
    } else {
        1.0
    };
    let ymax = (max / tick).ceil().max(1.0) * tick;
    let px = |t: f64| left + (t - style.start) / (style.end - style.start) * (right - left);
    let py = |v: f64| bottom - v / ymax * (bottom - top);

    // Horizontal grid with values, vertical grid with times.
    let mut v = 0.0;
    while v <= ymax + tick / 2.0 {
        let _ = writeln!(
            svg,
            r##"<line x1="{left:.1}" y1="{0:.1}" x2="{right:.1}" y2="{0:.1}" stroke="#2c3235"/><text x="{1:.1}" y="{2:.1}" class="axis" text-anchor="end">{3}</text>"##,
            py(v),
            left - 6.0,
            py(v) + 4.0,
            escape(&format_value(v, &style.unit))
        );
        v += tick;
    }
    // Time ticks on round minutes, four to eight of them.
    let span = style.end - style.start;
    let every = [60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0]
        .into_iter()
        .find(|s| span / s <= 8.0)
        .unwrap_or(7200.0);
    let mut t = (style.start / every).ceil() * every;
    while t <= style.end {
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" y1="{top:.1}" x2="{0:.1}" y2="{bottom:.1}" stroke="#22262b"/><text x="{0:.1}" y="{1:.1}" class="axis" text-anchor="middle">{2}</text>"##,
            px(t),
            bottom + 15.0,
            clock(t)
        );
        t += every;
    }

    let slot = (right - left) * style.step / (style.end - style.start);
    let visible = series
        .iter()
        .filter(|s| !s.points.is_empty())
        .count()
        .max(1);
    let mut drawn_before = 0;
    for (i, s) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        if style.bars {
            // Side by side within each step, ending at the point's time (the interval it counts).
            let bar = (slot * 0.8 / visible as f64).max(1.0);
            let offset = bar * drawn_before as f64;
            if !s.points.is_empty() {
                drawn_before += 1;
            }
            for (t, v) in s.points.iter().filter(|p| p.1 > 0.0) {
                let bx = px(*t) - slot * 0.9 + offset;
                let _ = writeln!(
                    svg,
                    r#"<rect x="{bx:.1}" y="{:.1}" width="{bar:.1}" height="{:.1}" fill="{colour}" fill-opacity="0.85"/>"#,
                    py(*v),
                    bottom - py(*v)
                );
            }
        } else {
            // A gap in the data (a missing step) breaks the line, as Grafana draws it.
            let mut segments: Vec<Vec<(f64, f64)>> = Vec::new();
            let mut last: Option<f64> = None;
            for (t, v) in s.points.iter().filter(|p| p.1.is_finite()) {
                if last.is_none_or(|l| t - l > style.step * 1.5) {
                    segments.push(Vec::new());
                }
                segments.last_mut().expect("pushed").push((px(*t), py(*v)));
                last = Some(*t);
            }
            for seg in segments {
                let path: Vec<String> = seg.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
                if seg.len() == 1 {
                    let _ = writeln!(
                        svg,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"/>"#,
                        seg[0].0, seg[0].1
                    );
                    continue;
                }
                let area = format!(
                    "{:.1},{bottom:.1} {} {:.1},{bottom:.1}",
                    seg[0].0,
                    path.join(" "),
                    seg[seg.len() - 1].0
                );
                let _ = writeln!(
                    svg,
                    r#"<polygon points="{area}" fill="{colour}" fill-opacity="0.10"/><polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                    path.join(" ")
                );
            }
        }
    }

    let mut ly = bottom + 34.0;
    let mut index = 0;
    for row in legend_rows {
        let mut lx = x + 12.0;
        for (label, width) in row {
            let colour = PALETTE[index % PALETTE.len()];
            let _ = writeln!(
                svg,
                r#"<rect x="{lx:.1}" y="{:.1}" width="14" height="4" rx="1" fill="{colour}"/><text x="{:.1}" y="{ly:.1}" class="legend">{}</text>"#,
                ly - 5.0,
                lx + 19.0,
                escape(&label)
            );
            lx += width;
            index += 1;
        }
        ly += 16.0;
    }
    svg
}

/// Legend entries in rows that fit `width`, each with the width it takes.
fn legend_layout(series: &[Drawn], width: f64) -> Vec<Vec<(String, f64)>> {
    let mut rows: Vec<Vec<(String, f64)>> = vec![Vec::new()];
    let mut used = 0.0;
    for s in series {
        let label = if s.legend.is_empty() {
            "(no labels)".to_owned()
        } else {
            s.legend.clone()
        };
        // 6.6 px per character at 12 px: wide enough for the font Chromium picks.
        let w = 19.0 + label.chars().count() as f64 * 6.6 + 18.0;
        if used + w > width && used > 0.0 {
            rows.push(Vec::new());
            used = 0.0;
        }
        used += w;
        rows.last_mut().expect("one row").push((label, w));
    }
    if rows.last().is_some_and(Vec::is_empty) {
        rows.pop();
    }
    rows
}

fn page(
    title: &str,
    width: u32,
    height: u32,
    body: &str,
    args: &Args,
    start: f64,
    end: f64,
) -> String {
    let note = format!(
        "{} to {} UTC, every {} s · data: the Prometheus of an end-to-end run ({}) · drawn from {} by e2e/src/bin/render-dashboard.rs, not by Grafana",
        clock(start),
        clock(end),
        args.step,
        args.prometheus_url,
        args.dashboard.display()
    );
    format!(
        r##"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
html, body {{ margin: 0; background: #111217; }}
text {{ font-family: "DejaVu Sans", "Liberation Sans", sans-serif; }}
.h1 {{ fill: #d8d9da; font-size: 20px; font-weight: bold; }}
.note {{ fill: #8e8e8e; font-size: 12px; }}
.title {{ fill: #d8d9da; font-size: 14px; font-weight: bold; }}
.axis {{ fill: #9fa7b3; font-size: 11px; }}
.legend {{ fill: #ccccdc; font-size: 12px; }}
.muted {{ fill: #8e8e8e; font-size: 14px; }}
</style></head>
<body>
<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">
<text x="{GAP}" y="30" class="h1">{}</text>
<text x="{GAP}" y="50" class="note">{}</text>
{body}</svg>
</body></html>
"##,
        escape(title),
        escape(&note)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_substituted_longest_first() {
        let dashboard = serde_json::json!({"templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus"},
            {"name": "agent_job", "type": "textbox", "query": "x",
             "current": {"value": "herdwatch-agent"}}
        ]}});
        let vars = variables(&dashboard, 60);
        assert!(!vars.contains_key("datasource"));
        assert_eq!(
            substitute(
                r#"rate(process_cpu_seconds_total{job="$agent_job"}[$__rate_interval]) or ${agent_job}"#,
                &vars
            ),
            r#"rate(process_cpu_seconds_total{job="herdwatch-agent"}[60s]) or herdwatch-agent"#
        );
    }

    #[test]
    fn legends_fill_labels() {
        let s = RangeSeries {
            metric: [
                ("namespace".to_owned(), "shop".to_owned()),
                ("rule".to_owned(), "r".to_owned()),
            ]
            .into(),
            values: vec![],
        };
        assert_eq!(
            legend_of("{{namespace}} {{ rule }} {{missing}}", &s),
            "shop r "
        );
        assert_eq!(legend_of("", &s), r#"{namespace="shop",rule="r"}"#);
    }

    #[test]
    fn values_read_in_their_units() {
        assert_eq!(format_value(0.0, "short"), "0");
        assert_eq!(format_value(1500.0, "short"), "1.5k");
        assert_eq!(format_value(64.0 * 1024.0 * 1024.0, "bytes"), "64 MiB");
        assert_eq!(format_value(0.025, "percentunit"), "2.5%");
        assert_eq!(format_value(20.0, "ops"), "20/s");
        assert_eq!(tick_step(9.0, "short"), 5.0);
        assert_eq!(
            tick_step(100.0 * 1024.0 * 1024.0, "bytes"),
            32.0 * 1024.0 * 1024.0
        );
        assert_eq!(clock(1_700_000_000.0), "22:13");
    }
}
