//! The pull verbs' flow, as upstream's `transfer_image_common()`: subscribe to the
//! transfer signals, call the pull member (falling back to the legacy member where the
//! daemon lacks the newer one), print `Enqueued transfer job N. …`, then relay the
//! transfer's log lines and show its progress until `TransferRemoved` says how it ended:
//! exit 0 for `done`, 1 otherwise. SIGINT/SIGTERM leave the transfer running (exit 1).
//!
//! Signals are matched by interface and member and checked against our transfer's path
//! in the callback (the path is known only once the call returned):
//! `Manager.TransferRemoved`, `Transfer.LogMessage`, `Transfer.ProgressUpdate`
//! (systemd 256+), our `io.github.systemd_import.Transfer1.DetailsUpdate`, and the bus
//! driver's `NameOwnerChanged`, so that a daemon that goes away ends the wait.

use dbus::arg::AppendAll;
use dbus::Message;

use super::client::{self, Ctl, Watch};
use super::display::{Display, Mode};
use super::progress::Layer;
use crate::bus::import1::{
    ImageClass, Verify, BUS_NAME, DETAILS_UPDATE, EXT_TRANSFER_INTERFACE, FLAG_FORCE,
    FLAG_KEEP_DOWNLOAD, FLAG_READ_ONLY, MANAGER_INTERFACE, MANAGER_PATH, TRANSFER_INTERFACE,
};
use crate::bus::{SignalMatch, DBUS_INTERFACE, DBUS_NAME};
use crate::event::{Clock, EventLoop, TimerAction};
use crate::util::log::{LOG_ERR, LOG_INFO};

/// A checked pull, ready to be asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullRequest {
    /// pull-tar (`raw` false) or pull-raw.
    Url {
        raw: bool,
        url: String,
        /// `""` for none.
        local: String,
        class: ImageClass,
        verify: Verify,
        flags: u64,
    },
    Oci {
        reference: String,
        local: String,
        class: ImageClass,
        flags: u64,
    },
    Dkr {
        index_url: String,
        remote: String,
        /// `""` for `latest`.
        tag: String,
        local: String,
        verify: Verify,
        force: bool,
    },
}

/// What to do when the daemon lacks the member first called.
#[derive(Debug, PartialEq, Eq)]
enum Fallback {
    /// Call this older member instead.
    Member(&'static str),
    /// Give up with this message.
    Refuse(String),
    /// Report the daemon's error as any other.
    None,
}

impl PullRequest {
    /// The member upstream's importctl calls: for class machine with no flag beyond
    /// force the legacy one, else the `…Ex` one.
    fn member(&self) -> &'static str {
        match self {
            PullRequest::Url {
                raw, class, flags, ..
            } => {
                let legacy = *class == ImageClass::Machine && flags & !FLAG_FORCE == 0;
                match (raw, legacy) {
                    (false, true) => "PullTar",
                    (false, false) => "PullTarEx",
                    (true, true) => "PullRaw",
                    (true, false) => "PullRawEx",
                }
            }
            PullRequest::Oci { .. } => "PullOci",
            PullRequest::Dkr { .. } => "PullDkr",
        }
    }

    /// The call of `member` with this request's arguments.
    fn message(&self, member: &str) -> Message {
        let mut msg = client::manager_call(member);
        match self {
            PullRequest::Url {
                url,
                local,
                class,
                verify,
                flags,
                ..
            } => {
                if member.ends_with("Ex") {
                    let flags = flags & (FLAG_FORCE | FLAG_READ_ONLY | FLAG_KEEP_DOWNLOAD);
                    (
                        url.as_str(),
                        local.as_str(),
                        class.as_str(),
                        verify.as_str(),
                        flags,
                    )
                        .append(&mut dbus::arg::IterAppend::new(&mut msg));
                } else {
                    let force = flags & FLAG_FORCE != 0;
                    (url.as_str(), local.as_str(), verify.as_str(), force)
                        .append(&mut dbus::arg::IterAppend::new(&mut msg));
                }
            }
            PullRequest::Oci {
                reference,
                local,
                class,
                flags,
            } => {
                let flags = flags & (FLAG_FORCE | FLAG_READ_ONLY);
                (reference.as_str(), local.as_str(), class.as_str(), flags)
                    .append(&mut dbus::arg::IterAppend::new(&mut msg));
            }
            PullRequest::Dkr {
                index_url,
                remote,
                tag,
                local,
                verify,
                force,
            } => {
                let args = (
                    index_url.as_str(),
                    remote.as_str(),
                    tag.as_str(),
                    local.as_str(),
                );
                args.append(&mut dbus::arg::IterAppend::new(&mut msg));
                (verify.as_str(), *force).append(&mut dbus::arg::IterAppend::new(&mut msg));
            }
        }
        msg
    }

    /// What to do when the daemon does not know `member` (a systemd 252 daemon has no
    /// `…Ex` members, no `PullOci`; only ours has `PullDkr`).
    fn fallback(&self, member: &'static str) -> Fallback {
        match self {
            PullRequest::Url { class, flags, .. } if member.ends_with("Ex") => {
                // The legacy members take only force; a 252 daemon's worker keeps the
                // download, which is what keep-download asks for.
                let mut lost = Vec::new();
                if *class != ImageClass::Machine {
                    lost.push(format!("--class={}", class.as_str()));
                }
                if flags & FLAG_READ_ONLY != 0 {
                    lost.push("--read-only".to_string());
                }
                if flags & FLAG_KEEP_DOWNLOAD == 0 {
                    lost.push("--keep-download=no".to_string());
                }
                if lost.is_empty() {
                    Fallback::Member(member.trim_end_matches("Ex"))
                } else {
                    Fallback::Refuse(format!(
                        "The import service lacks {member}() (systemd before 256), so it \
                         cannot honour {}.",
                        lost.join(", ")
                    ))
                }
            }
            PullRequest::Oci { .. } => Fallback::Refuse(
                "The import service cannot pull OCI images: it lacks PullOci() (systemd 260 \
                 and this project's systemd-importd have it)."
                    .to_string(),
            ),
            PullRequest::Dkr { .. } => Fallback::Refuse(
                "The import service cannot pull from Docker v1 registries: it lacks \
                 PullDkr() (this project's systemd-importd has it)."
                    .to_string(),
            ),
            _ => Fallback::None,
        }
    }
}

/// Run a pull to its end; returns the exit status.
pub fn run(req: &PullRequest, quiet: bool, ask_password: bool, program: &str) -> i32 {
    // Blocked before the call, so that a signal arriving once the transfer is enqueued
    // (and before its sources exist) waits for them instead of killing us.
    if let Err(e) = crate::event::block_signals(&[libc::SIGINT, libc::SIGTERM]) {
        log::error!("Failed to block signals: {e}");
        return 1;
    }
    let Ok((mut lp, mut ctl)) = client::connect() else {
        return 1;
    };
    ctl.watch = Some(Watch {
        transfer: None,
        display: Display::new(Mode::detect(quiet)),
        redraw: None,
        program: program.to_string(),
    });
    subscribe(&mut lp, &mut ctl);
    if call_pull(&mut lp, &mut ctl, req, ask_password).is_err() {
        return 1;
    }
    if watch_of(&mut ctl).transfer.is_none() {
        log::error!("Failed to parse bus message: the reply is not (uo)");
        return 1;
    }
    for signo in [libc::SIGINT, libc::SIGTERM] {
        if let Err(e) = lp.add_signal(signo, |lp, ctl, _, _| {
            interrupted(lp, ctl);
            Ok(())
        }) {
            log::error!("Failed to install signal handler: {e}");
            return 1;
        }
    }
    match lp.run(&mut ctl) {
        Ok(0) => 0,
        Ok(_) => 1,
        Err(e) => {
            log::error!("Failed to run event loop: {e}");
            1
        }
    }
}

/// The pull call, with the fallback for older daemons. Errors are logged.
fn call_pull(
    lp: &mut EventLoop<Ctl>,
    ctl: &mut Ctl,
    req: &PullRequest,
    interactive: bool,
) -> Result<Message, ()> {
    let member = req.member();
    let e = match client::call_then(lp, ctl, req.message(member), interactive, enqueued) {
        Ok(reply) => return Ok(reply),
        Err(e) => e,
    };
    if client::is_unknown_member(&e) {
        match req.fallback(member) {
            Fallback::Member(older) => {
                log::debug!("{member}() is not available, calling {older}().");
                let msg = req.message(older);
                return client::call_then(lp, ctl, msg, interactive, enqueued).map_err(|e| {
                    log::error!("Failed to transfer image: {}", e.message());
                });
            }
            Fallback::Refuse(why) => {
                log::error!("{why}");
                return Err(());
            }
            Fallback::None => {}
        }
    }
    log::error!("Failed to transfer image: {}", e.message());
    Err(())
}

/// The daemon answered the pull with `(id, path)`: from now on signals from `path` are
/// ours. Runs before any message that arrived after the reply is dispatched.
fn enqueued(ctl: &mut Ctl, reply: &Message) {
    let Ok((id, path)) = reply.read2::<u32, dbus::Path>() else {
        return;
    };
    let watch = watch_of(ctl);
    watch.transfer = Some((id, path.to_string()));
    watch.display.log(
        LOG_INFO,
        &format!("Enqueued transfer job {id}. Press C-c to continue download in background."),
    );
}

fn watch_of(ctl: &mut Ctl) -> &mut Watch {
    ctl.watch.as_mut().expect("pulls watch a transfer")
}

fn transfer_match(interface: &str, member: &str) -> SignalMatch {
    SignalMatch {
        sender: Some(BUS_NAME.into()),
        interface: Some(interface.into()),
        member: Some(member.into()),
        ..SignalMatch::default()
    }
}

/// Ask for every signal the wait needs, before the call that starts the transfer.
fn subscribe(lp: &mut EventLoop<Ctl>, ctl: &mut Ctl) {
    let removed = SignalMatch::new(BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, "TransferRemoved");
    ctl.bus.add_match(lp, removed, |lp, ctl, msg| {
        let Ok((_, path, result)) = msg.read3::<u32, dbus::Path, &str>() else {
            return;
        };
        let watch = watch_of(ctl);
        if watch.is_ours(Some(&path)) {
            watch.display.finish();
            lp.exit(i32::from(result != "done"));
        }
    });
    let log_message = transfer_match(TRANSFER_INTERFACE, "LogMessage");
    ctl.bus.add_match(lp, log_message, |lp, ctl, msg| {
        let watch = watch_of(ctl);
        if !watch.is_ours(msg.path().as_deref()) {
            return;
        }
        let Ok((priority, line)) = msg.read2::<u32, &str>() else {
            return;
        };
        let changed = watch.display.progress.take_log_line(line);
        let priority = u8::try_from(priority).unwrap_or(LOG_ERR).min(7);
        watch.display.log(priority, line);
        if changed {
            refresh(lp, ctl);
        }
    });
    let progress = transfer_match(TRANSFER_INTERFACE, "ProgressUpdate");
    ctl.bus.add_match(lp, progress, |lp, ctl, msg| {
        let watch = watch_of(ctl);
        if !watch.is_ours(msg.path().as_deref()) {
            return;
        }
        if let Ok(fraction) = msg.read1::<f64>() {
            watch.display.progress.set_fraction(fraction);
            refresh(lp, ctl);
        }
    });
    let details = transfer_match(EXT_TRANSFER_INTERFACE, DETAILS_UPDATE);
    ctl.bus.add_match(lp, details, |lp, ctl, msg| {
        let watch = watch_of(ctl);
        if !watch.is_ours(msg.path().as_deref()) {
            return;
        }
        type Args = (f64, u64, u64, u64, Vec<(u32, u32, String, u64, u64)>);
        let Ok((fraction, done, total, rate, layers)) = msg.read_all::<Args>() else {
            return;
        };
        let layers = layers
            .into_iter()
            .map(|(index, count, state, done, total)| Layer {
                index,
                count,
                state,
                done,
                total: (total != u64::MAX).then_some(total),
            })
            .collect();
        watch
            .display
            .progress
            .set_details(fraction, done, total, rate, layers);
        refresh(lp, ctl);
    });
    let owner = SignalMatch::new(
        DBUS_NAME,
        crate::bus::DBUS_PATH,
        DBUS_INTERFACE,
        "NameOwnerChanged",
    );
    ctl.bus.add_match(lp, owner, |lp, ctl, msg| {
        let Ok((name, _, new_owner)) = msg.read3::<&str, &str, &str>() else {
            return;
        };
        let watch = watch_of(ctl);
        if name == BUS_NAME && new_owner.is_empty() && watch.transfer.is_some() {
            watch.display.finish();
            log::error!("The import service went away before the transfer ended.");
            lp.exit(1);
        }
    });
}

/// The progress changed: redraw now, or arm the timer of the redraw owed.
fn refresh(lp: &mut EventLoop<Ctl>, ctl: &mut Ctl) {
    let now = lp.now(Clock::Monotonic);
    let watch = watch_of(ctl);
    let Some(deadline) = watch.display.changed(now) else {
        return;
    };
    if watch.redraw.is_some() {
        return;
    }
    let timer = lp.add_timer(Clock::Monotonic, deadline, |lp, ctl, _, _| {
        let now = lp.now(Clock::Monotonic);
        let watch = watch_of(ctl);
        watch.redraw = None;
        watch.display.flush(now);
        Ok(TimerAction::Drop)
    });
    match timer {
        Ok(id) => watch_of(ctl).redraw = Some(id),
        Err(e) => log::debug!("Failed to arm the redraw timer: {e}"),
    }
}

/// SIGINT/SIGTERM: leave the transfer to the daemon.
fn interrupted(lp: &mut EventLoop<Ctl>, ctl: &mut Ctl) {
    let watch = watch_of(ctl);
    watch.display.finish();
    if let Some((id, _)) = watch.transfer {
        let text = format!(
            "Continuing download in the background. Use \"{} cancel-transfer {id}\" to abort transfer.",
            watch.program
        );
        watch.display.log(LOG_INFO, &text);
    }
    lp.exit(libc::EINTR);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(class: ImageClass, flags: u64) -> PullRequest {
        PullRequest::Url {
            raw: false,
            url: "https://h/i.tar".into(),
            local: "i".into(),
            class,
            verify: Verify::No,
            flags,
        }
    }

    #[test]
    fn members_and_fallbacks() {
        let r = url(ImageClass::Machine, FLAG_FORCE);
        assert_eq!(r.member(), "PullTar");
        assert_eq!(
            crate::bus::message::signature(&r.message("PullTar")),
            "sssb"
        );
        let r = url(ImageClass::Machine, FLAG_KEEP_DOWNLOAD | FLAG_FORCE);
        assert_eq!(r.member(), "PullTarEx");
        assert_eq!(
            crate::bus::message::signature(&r.message("PullTarEx")),
            "sssst"
        );
        assert_eq!(r.fallback("PullTarEx"), Fallback::Member("PullTar"));
        let r = url(ImageClass::Sysext, FLAG_READ_ONLY);
        match r.fallback("PullTarEx") {
            Fallback::Refuse(why) => assert!(
                why.contains("--class=sysext, --read-only, --keep-download=no"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            url(ImageClass::Machine, 0).fallback("PullTar"),
            Fallback::None
        );
        let oci = PullRequest::Oci {
            reference: "a/b".into(),
            local: String::new(),
            class: ImageClass::Machine,
            flags: FLAG_KEEP_DOWNLOAD | FLAG_FORCE,
        };
        let msg = oci.message(oci.member());
        assert_eq!(crate::bus::message::signature(&msg), "ssst");
        assert_eq!(
            msg.read_all::<(String, String, String, u64)>().unwrap().3,
            FLAG_FORCE
        );
        assert!(matches!(oci.fallback("PullOci"), Fallback::Refuse(_)));
        let dkr = PullRequest::Dkr {
            index_url: "https://i".into(),
            remote: "a/b".into(),
            tag: String::new(),
            local: String::new(),
            verify: Verify::No,
            force: false,
        };
        assert_eq!(
            crate::bus::message::signature(&dkr.message(dkr.member())),
            "sssssb"
        );
    }
}
