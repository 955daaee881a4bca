//! Network endpoints: TCP connect, listen and accept from the `inet_sock_set_state`
//! tracepoint, UDP destinations from `sock_send_length`. Each is reported once per
//! (cgroup, op, peer address, port).
//!
//! Why these sources:
//! - TCP state changes see every TCP socket whatever API opened it (blocking or not,
//!   io_uring, TCP fast open), IPv4 and IPv6, with both addresses. CLOSE→SYN_SENT and
//!   CLOSE→LISTEN happen in the calling process. SYN_RECV→ESTABLISHED (an inbound
//!   connection completing) happens in softirq context, where the current task is whoever
//!   was interrupted, so the cgroup is read from the socket itself (`sk_cgrp_data`, set from
//!   the listener's creator), and the process from the `listen()` we saw on that port.
//! - BTF tracepoints (tp_btf), like every program of herdwatch's: their arguments are the
//!   kernel's own (`struct sock *`, old and new state), and the addresses and ports are
//!   read from the socket at offsets the loader takes from the kernel's BTF. A classic
//!   tracepoint would need tracefs to attach and to publish its record's layout, and a
//!   freshly booted node has no tracefs mounted.
//! - UDP has no connection state to trace. `sock_send_length` fires after every socket
//!   send with the `struct sock` and its protocol, in the sending task, so no syscall exit
//!   needs tracing: the destination is the address the send syscall named (read through
//!   the task's saved registers), or else the socket's connected peer. (A UDP `connect()`
//!   alone sends nothing; it shows with the first send.)

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::gen,
    macros::{btf_tracepoint, map},
    maps::LruHashMap,
    programs::BtfTracePointContext,
};
use core::ptr::addr_of_mut;
use herdwatch_abi::{
    EventKind, NetEvent, NetKey, AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, NET_ACCEPT,
    NET_CONNECT, NET_LISTEN, NET_UDP_SEND,
};

use crate::common::{
    current_cgroup_id, kread, off, reserve, submit, uread, write_header, Actor, Error,
};
use crate::syscalls::{NR_SENDMMSG, NR_SENDMSG, NR_SENDTO, REG_ORIG_AX, REG_R8, REG_SI};

/// include/net/tcp_states.h
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;
const TCP_LISTEN: i32 = 10;

/// (cgroup, op, family, protocol, port, address) → seen.
#[map]
static NET_SEEN: LruHashMap<NetKey, u8> = LruHashMap::with_max_entries(8192, 0);

#[repr(C)]
struct ListenerKey {
    cgroup_id: u64,
    port: u16,
    _pad: [u16; 3],
}

/// (cgroup, local port) → the process that last called listen() there, to name the
/// process of inbound connections, which complete in softirq context.
#[map]
static LISTENERS: LruHashMap<ListenerKey, Actor> = LruHashMap::with_max_entries(4096, 0);

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> u32 {
    let _ = try_inet_sock_set_state(&ctx);
    0
}

/// `inet_sock_set_state(const struct sock *sk, const int oldstate, const int newstate)`.
#[inline(always)]
fn try_inet_sock_set_state(ctx: &BtfTracePointContext) -> Result<(), Error> {
    // SAFETY: the tracepoint's arguments, as its prototype declares them.
    let (sk, old, new) = unsafe {
        (
            ctx.arg::<usize>(0),
            ctx.arg::<u64>(1) as i32,
            ctx.arg::<u64>(2) as i32,
        )
    };
    let op = match (old, new) {
        (TCP_CLOSE, TCP_SYN_SENT) => NET_CONNECT,
        (TCP_CLOSE, TCP_LISTEN) => NET_LISTEN,
        (TCP_SYN_RECV, TCP_ESTABLISHED) => NET_ACCEPT,
        _ => return Ok(()),
    };
    if kread::<u16>(sk, off!(sock_protocol))? != u16::from(IPPROTO_TCP) {
        return Ok(());
    }
    let family: u16 = kread(sk, off!(sock_family))?;
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    if family == u16::from(AF_INET) {
        saddr[..4].copy_from_slice(&kread::<[u8; 4]>(sk, off!(sock_rcv_saddr))?);
        daddr[..4].copy_from_slice(&kread::<[u8; 4]>(sk, off!(sock_daddr))?);
    } else if family == u16::from(AF_INET6) {
        saddr = kread(sk, off!(sock_v6_rcv_saddr))?;
        daddr = kread(sk, off!(sock_v6_daddr))?;
    } else {
        return Ok(());
    }
    // Host byte order: skc_num is kept so; skc_dport is in network order.
    let sport: u16 = kread(sk, off!(sock_num))?;
    let dport = u16::from_be(kread::<u16>(sk, off!(sock_dport))?);

    let (cgroup_id, actor) = if op == NET_ACCEPT {
        let cgroup_id = socket_cgroup_id(sk)?;
        let key = ListenerKey {
            cgroup_id,
            port: sport,
            _pad: [0; 3],
        };
        // SAFETY: the value is copied out at once.
        let actor = unsafe { LISTENERS.get(&key) }
            .copied()
            .unwrap_or(Actor::UNKNOWN);
        (cgroup_id, actor)
    } else {
        (current_cgroup_id(), Actor::current())
    };
    if op == NET_LISTEN {
        let key = ListenerKey {
            cgroup_id,
            port: sport,
            _pad: [0; 3],
        };
        let _ = LISTENERS.insert(&key, &actor, 0);
    }
    // The peer identifies connects and accepts (with our local port for accepts: the
    // peer's is ephemeral); the local address and port identify a listener.
    let key = match op {
        NET_CONNECT => net_key(cgroup_id, op, family as u8, IPPROTO_TCP, dport, daddr),
        NET_ACCEPT => net_key(cgroup_id, op, family as u8, IPPROTO_TCP, sport, daddr),
        _ => net_key(cgroup_id, op, family as u8, IPPROTO_TCP, sport, saddr),
    };
    emit_once(&key, actor, sport, dport, &saddr, &daddr)
}

/// The cgroup v2 id a socket was created in: `sk->sk_cgrp_data.cgroup->kn->id`, the value
/// `bpf_get_current_cgroup_id()` gives in process context.
#[inline(always)]
fn socket_cgroup_id(sk: usize) -> Result<u64, Error> {
    let cgroup: usize = kread(sk, off!(sock_cgroup))?;
    let kn: usize = kread(cgroup, off!(cgroup_kn))?;
    kread(kn, off!(kernfs_node_id))
}

#[inline(always)]
fn net_key(cgroup_id: u64, op: u8, family: u8, protocol: u8, port: u16, addr: [u8; 16]) -> NetKey {
    NetKey {
        cgroup_id,
        op,
        family,
        protocol,
        _pad0: 0,
        port,
        _pad1: 0,
        addr,
    }
}

/// Emits a `NetEvent` unless `key` was seen before.
#[inline(always)]
fn emit_once(
    key: &NetKey,
    actor: Actor,
    sport: u16,
    dport: u16,
    saddr: &[u8; 16],
    daddr: &[u8; 16],
) -> Result<(), Error> {
    if NET_SEEN.get_ptr(key).is_some() {
        return Ok(());
    }
    // NOEXIST: when two CPUs race on the same key, only the one that inserts reports.
    if NET_SEEN.insert(key, &1, u64::from(BPF_NOEXIST)).is_err() {
        return Ok(());
    }
    let Some(mut entry) = reserve::<NetEvent>(EventKind::Net) else {
        // Counted as lost; forget the key so that the next sighting reports it.
        let _ = NET_SEEN.remove(key);
        return Ok(());
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is the reserved record.
    unsafe {
        write_header(
            addr_of_mut!((*event).header),
            EventKind::Net,
            key.cgroup_id,
            actor,
        );
        addr_of_mut!((*event).op).write(key.op);
        addr_of_mut!((*event).family).write(key.family);
        addr_of_mut!((*event).protocol).write(key.protocol);
        addr_of_mut!((*event)._pad0).write(0);
        addr_of_mut!((*event).sport).write(sport);
        addr_of_mut!((*event).dport).write(dport);
        addr_of_mut!((*event).saddr).write(*saddr);
        addr_of_mut!((*event).daddr).write(*daddr);
    }
    submit(entry, EventKind::Net);
    Ok(())
}

#[btf_tracepoint(function = "sock_send_length")]
pub fn sock_send_length(ctx: BtfTracePointContext) -> u32 {
    let _ = try_sock_send_length(&ctx);
    0
}

/// A datagram sent on a UDP socket: where to. Fires after every socket send
/// (`sock_sendmsg`), in the sending task:
/// `sock_send_length(struct sock *sk, int ret, int flags)`.
#[inline(always)]
fn try_sock_send_length(ctx: &BtfTracePointContext) -> Result<(), Error> {
    // SAFETY: the tracepoint's arguments, as its prototype declares them.
    let (sk, ret) = unsafe { (ctx.arg::<usize>(0), ctx.arg::<u64>(1) as i32) };
    if ret < 0 || kread::<u16>(sk, off!(sock_protocol))? != u16::from(IPPROTO_UDP) {
        return Ok(());
    }
    let (family, port, daddr) = match send_address()? {
        Some(destination) => destination,
        // No address with the send: the socket's connected peer.
        None => connected_peer(sk)?,
    };
    if port == 0 {
        return Ok(());
    }
    let key = net_key(
        current_cgroup_id(),
        NET_UDP_SEND,
        family,
        IPPROTO_UDP,
        port,
        daddr,
    );
    emit_once(&key, Actor::current(), 0, port, &[0; 16], &daddr)
}

/// The destination the current syscall named, if it is a sendto/sendmsg/sendmmsg with an
/// address: (family, port, address).
#[inline(always)]
fn send_address() -> Result<Option<(u8, u16, [u8; 16])>, Error> {
    // SAFETY: helpers on the current task, which is in a syscall (or a kernel thread,
    // whose registers name no send syscall).
    let regs = unsafe { gen::bpf_task_pt_regs(gen::bpf_get_current_task_btf()) } as usize;
    let reg = |index: usize| kread::<u64>(regs, index * 8);
    let sockaddr = match reg(REG_ORIG_AX)? as i64 {
        NR_SENDTO => reg(REG_R8)?,
        // sendmsg(fd, struct msghdr *msg, flags): msg_name is msghdr's first field;
        // sendmmsg's vector starts with a msghdr too (the first message names the peer).
        NR_SENDMSG | NR_SENDMMSG => uread::<u64>(reg(REG_SI)? as usize)?,
        _ => 0,
    };
    if sockaddr == 0 {
        return Ok(None);
    }
    let sockaddr = sockaddr as usize;
    // sockaddr_in: family, port, 4-byte address; sockaddr_in6: family, port, flowinfo,
    // 16-byte address. Ports and addresses in network order.
    let family: u16 = uread(sockaddr)?;
    let port = u16::from_be(uread::<u16>(sockaddr + 2)?);
    let mut daddr = [0u8; 16];
    if family == u16::from(AF_INET) {
        daddr[..4].copy_from_slice(&uread::<[u8; 4]>(sockaddr + 4)?);
    } else if family == u16::from(AF_INET6) {
        daddr = uread(sockaddr + 8)?;
    } else {
        return Ok(None);
    }
    Ok(Some((family as u8, port, daddr)))
}

/// The peer of a connected socket (`sk->__sk_common`): (family, port, address).
#[inline(always)]
fn connected_peer(sk: usize) -> Result<(u8, u16, [u8; 16]), Error> {
    let family: u16 = kread(sk, off!(sock_family))?;
    let port = u16::from_be(kread::<u16>(sk, off!(sock_dport))?);
    let mut daddr = [0u8; 16];
    if family == u16::from(AF_INET) {
        daddr[..4].copy_from_slice(&kread::<[u8; 4]>(sk, off!(sock_daddr))?);
    } else if family == u16::from(AF_INET6) {
        daddr = kread(sk, off!(sock_v6_daddr))?;
    } else {
        return Err(-1);
    }
    Ok((family as u8, port, daddr))
}
