//! Invalid herdwatch objects are refused by the API server itself (OpenAPI schema and CEL
//! rules in the CRDs), with a message that says what to change.

use herdwatch_api::common::{FileAccess, FileEntry, Mode, ProcessEntry, ResponseAction};
use herdwatch_api::policy::DenyKind;
use herdwatch_api::{BehaviorProfile, ClusterBehaviorPolicy};
use herdwatch_e2e::fixtures::{deny_wget_policy, deny_wget_policy_killing, web_profile};
use herdwatch_e2e::{step, with_temp_ns, Env};
use kube::api::PostParams;
use kube::Api;

/// Creates `obj` and returns the API server's refusal, panicking if it was accepted.
async fn refused<K>(api: &Api<K>, obj: &K, what: &str) -> String
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => panic!("the API server accepted {what}"),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{what} is refused as Invalid: {status:?}");
            step(format!("{what}: refused: {}", status.message));
            status.message.clone()
        }
        Err(e) => panic!("creating {what} failed for another reason: {e}"),
    }
}

#[tokio::test]
async fn invalid_profile_is_refused_with_the_cel_message() {
    // The CRDs come with the chart: install it when it is not there.
    let env = Env::with_herdwatch().await;
    with_temp_ns(&env, "validation", &[], |env, ns| async move {
        let api: Api<BehaviorProfile> = Api::namespaced(env.client.clone(), &ns);

        // Kill while learning: the CEL rule on the spec.
        let mut kill_in_learn = web_profile("kill-in-learn", "web", "web", ResponseAction::Kill);
        kill_in_learn.spec.mode = Mode::Learn;
        let msg = refused(&api, &kill_in_learn, "mode Learn with response action Kill").await;
        assert!(
            msg.contains("response.action Kill is not allowed while mode is Learn: set mode to Enforce or action to Tag"),
            "the message says what to change: {msg}"
        );

        // A duration the operator could not read: the CEL rule on the field.
        let mut bad_duration = web_profile("bad-duration", "web", "web", ResponseAction::Tag);
        bad_duration.spec.learning.min_duration = "1 day".into();
        let msg = refused(&api, &bad_duration, "learning.minDuration \"1 day\"").await;
        assert!(
            msg.contains("learning.minDuration must be a duration in whole hours, minutes and seconds"),
            "the message names the field: {msg}"
        );

        // The same profile in Enforce is valid: the refusals above are about the rule.
        let mut valid = kill_in_learn.clone();
        valid.spec.mode = Mode::Enforce;
        api.create(&PostParams::default(), &valid)
            .await
            .unwrap_or_else(|e| panic!("mode Enforce with action Kill is accepted: {e}"));
        step("the same profile with mode Enforce: accepted");

        // An argument pattern with more `**` than a matcher needs: bounded work per exec.
        let mut stars = web_profile("too-many-stars", "web", "web", ResponseAction::Tag);
        stars.spec.allowed.processes.push(ProcessEntry {
            exe: "/bin/app".into(),
            argv: Some(vec!["**".to_owned(); 9]),
            ..ProcessEntry::default()
        });
        let msg = refused(&api, &stars, "argv with nine ** items").await;
        assert!(msg.contains("argv may have at most 8 ** items"), "{msg}");

        // A file entry that is both one path and a subtree.
        let mut both = web_profile("path-and-prefix", "web", "web", ResponseAction::Tag);
        both.spec.allowed.files.push(FileEntry {
            path: Some("/etc/app.conf".into()),
            prefix: Some("/etc".into()),
            access: vec![FileAccess::Read],
            ..FileEntry::default()
        });
        let msg = refused(&api, &both, "a file entry with path and prefix").await;
        assert!(msg.contains("a file entry has either path"), "{msg}");

        // A policy rule that denies binaries without naming any.
        let policies: Api<ClusterBehaviorPolicy> = Api::all(env.client.clone());
        let mut no_binaries = deny_wget_policy(&ns, ResponseAction::Tag);
        no_binaries.spec.rules[0].binaries = None;
        assert_eq!(no_binaries.spec.rules[0].deny, DenyKind::Binaries);
        let msg = refused(&policies, &no_binaries, "deny Binaries without binaries").await;
        assert!(
            msg.contains("deny Binaries needs a non-empty binaries list"),
            "the message says what to add: {msg}"
        );

        // A policy that kills processes in every namespace.
        let mut everywhere = deny_wget_policy_killing(&ns, ResponseAction::Tag);
        everywhere.spec.namespace_selector = None;
        let msg = refused(&policies, &everywhere, "killProcess without a namespaceSelector").await;
        assert!(
            msg.contains("a rule with killProcess needs a non-empty namespaceSelector"),
            "the message says what to add: {msg}"
        );
    })
    .await;
}
