//! The `org.freedesktop.import1` API: the Manager and Transfer interfaces (member names,
//! argument names and signatures as systemd 260 has them, minus the `Import*`/`Export*`
//! members, which arrive with the import/export work), and their handlers; and next to
//! the Transfer interface this project's `io.github.systemd_import.Transfer1` (bytes,
//! rate, layers: see [`crate::bus::import1::EXT_TRANSFER_INTERFACE`]).
//!
//! Privileged members (`Pull*`, `CancelTransfer`, `Transfer.Cancel`) first pass
//! `Bus::authorize` (root, or polkit `org.freedesktop.import1.pull`; `CancelTransfer`
//! checks `org.freedesktop.import1.cancel`, as v256+), then check their arguments,
//! then act. Listing members and properties are open to everyone.

use dbus::Path;

use super::images;
use super::manager::{Manager, MANAGER_INTERFACE, MANAGER_PATH, TRANSFER_INTERFACE};
use super::request::{self, DkrArgs, PullRequest, TransferType, UrlArgs};
use super::transfer::{self, TRANSFER_PREFIX};
use crate::bus::import1::{DETAILS_UPDATE, EXT_TRANSFER_INTERFACE};
use crate::bus::{names, Args, Bus, BusError, Call, EmitsChanged, Handled, Interface, Value};
use crate::event::EventLoop;

const ACTION_PULL: &str = "org.freedesktop.import1.pull";
const ACTION_CANCEL: &str = "org.freedesktop.import1.cancel";

const TRANSFER_OUT: Args = &[("transfer_id", "u"), ("transfer_path", "o")];
/// The filter of `ListTransfersEx` and `ListImages`.
const CLASS_FLAGS: Args = &[("class", "s"), ("flags", "t")];
/// `PullTar`/`PullRaw` and their `…Ex` forms.
const URL_ARGS: Args = &[
    ("url", "s"),
    ("local_name", "s"),
    ("verify_mode", "s"),
    ("force", "b"),
];
const URL_EX_ARGS: Args = &[
    ("url", "s"),
    ("local_name", "s"),
    ("class", "s"),
    ("verify_mode", "s"),
    ("flags", "t"),
];

/// Register the manager object and the transfer objects.
pub fn register(bus: &mut Bus<Manager>) {
    let manager = Interface::new(MANAGER_INTERFACE)
        .method("PullTar", URL_ARGS, TRANSFER_OUT, pull_url)
        .method("PullTarEx", URL_EX_ARGS, TRANSFER_OUT, pull_url)
        .method("PullRaw", URL_ARGS, TRANSFER_OUT, pull_url)
        .method("PullRawEx", URL_EX_ARGS, TRANSFER_OUT, pull_url)
        .method(
            "PullOci",
            &[
                ("ref", "s"),
                ("local_name", "s"),
                ("class", "s"),
                ("flags", "t"),
            ],
            TRANSFER_OUT,
            pull_oci,
        )
        .method(
            "PullDkr",
            &[
                ("index_url", "s"),
                ("remote", "s"),
                ("tag", "s"),
                ("local_name", "s"),
                ("verify_mode", "s"),
                ("force", "b"),
            ],
            TRANSFER_OUT,
            pull_dkr,
        )
        .method(
            "ListTransfers",
            &[],
            &[("transfers", "a(usssdo)")],
            list_transfers,
        )
        .method(
            "ListTransfersEx",
            CLASS_FLAGS,
            &[("transfers", "a(ussssdo)")],
            list_transfers,
        )
        .method(
            "CancelTransfer",
            &[("transfer_id", "u")],
            &[],
            cancel_transfer,
        )
        .method(
            "ListImages",
            CLASS_FLAGS,
            &[("images", "a(ssssbtttttt)")],
            list_images,
        )
        .signal("TransferNew", TRANSFER_OUT)
        .signal(
            "TransferRemoved",
            &[
                ("transfer_id", "u"),
                ("transfer_path", "o"),
                ("result", "s"),
            ],
        );
    bus.add_object(MANAGER_PATH, vec![manager]);

    let transfer = Interface::new(TRANSFER_INTERFACE)
        .property("Id", "u", EmitsChanged::Const, |m, p| {
            with_transfer(m, p, |t| Value::U32(t.id))
        })
        .property("Local", "s", EmitsChanged::Const, |m, p| {
            with_transfer(m, p, |t| {
                Value::Str(t.request.local.clone().unwrap_or_default())
            })
        })
        .property("Remote", "s", EmitsChanged::Const, |m, p| {
            with_transfer(m, p, |t| Value::Str(t.request.remote.clone()))
        })
        .property("Type", "s", EmitsChanged::Const, |m, p| {
            with_transfer(m, p, |t| Value::Str(t.request.kind.as_str().into()))
        })
        .property("Verify", "s", EmitsChanged::Const, |m, p| {
            with_transfer(m, p, |t| {
                Value::Str(t.request.verify.map_or("", |v| v.as_str()).into())
            })
        })
        .property("Progress", "d", EmitsChanged::False, |m, p| {
            with_transfer(m, p, |t| Value::F64(t.progress_value()))
        })
        .method("Cancel", &[], &[], transfer_cancel)
        .signal("LogMessage", &[("priority", "u"), ("line", "s")])
        .signal("ProgressUpdate", &[("progress", "d")]);
    let details = Interface::new(EXT_TRANSFER_INTERFACE)
        .property("BytesDone", "t", EmitsChanged::False, |m, p| {
            with_transfer(m, p, |t| Value::U64(bytes(t).0))
        })
        .property("BytesTotal", "t", EmitsChanged::False, |m, p| {
            with_transfer(m, p, |t| Value::U64(bytes(t).1))
        })
        .property("Rate", "t", EmitsChanged::False, |m, p| {
            with_transfer(m, p, |t| Value::U64(rate(t)))
        })
        .property("Layers", LAYERS, EmitsChanged::False, |m, p| {
            with_transfer(m, p, layers_value)
        })
        .signal(
            DETAILS_UPDATE,
            &[
                ("progress", "d"),
                ("bytes_done", "t"),
                ("bytes_total", "t"),
                ("rate", "t"),
                ("layers", LAYERS),
            ],
        );
    bus.add_fallback(
        TRANSFER_PREFIX,
        |m, path| transfer::id_of(path).is_some_and(|id| m.transfers.contains_key(&id)),
        |m| m.transfers.values().map(|t| t.path.clone()).collect(),
        vec![transfer, details],
    );
}

/// The signature of our `Layers` property and of `DetailsUpdate`'s last argument.
const LAYERS: &str = "a(uustt)";

/// A layer of our interface: index, count, state, bytes done, bytes total.
type LayerRow = (u32, u32, String, u64, u64);

/// Bytes done and total, `u64::MAX` for unknown.
fn bytes(t: &transfer::Transfer) -> (u64, u64) {
    match t.details.as_ref().and_then(|d| d.bytes) {
        Some((done, total)) => (done, total.unwrap_or(u64::MAX)),
        None => (u64::MAX, u64::MAX),
    }
}

fn rate(t: &transfer::Transfer) -> u64 {
    t.details.as_ref().and_then(|d| d.rate).unwrap_or(u64::MAX)
}

fn layer_rows(t: &transfer::Transfer) -> Vec<LayerRow> {
    let layers = t.details.as_ref().map_or(&[][..], |d| &d.layers[..]);
    layers
        .iter()
        .map(|l| {
            (
                l.index,
                l.count,
                l.state.as_str().to_string(),
                l.done,
                l.total.unwrap_or(u64::MAX),
            )
        })
        .collect()
}

fn layers_value(t: &transfer::Transfer) -> Value {
    let rows = layer_rows(t)
        .into_iter()
        .map(|(index, count, state, done, total)| {
            Value::Struct(vec![
                Value::U32(index),
                Value::U32(count),
                Value::Str(state),
                Value::U64(done),
                Value::U64(total),
            ])
        })
        .collect();
    Value::Array(&LAYERS[1..], rows)
}

/// The arguments of `DetailsUpdate` for transfer `t`.
pub fn details_update(t: &transfer::Transfer) -> (f64, u64, u64, u64, Vec<LayerRow>) {
    let (done, total) = bytes(t);
    (t.progress_value(), done, total, rate(t), layer_rows(t))
}

/// A property of the transfer at `path` (which exists: routing checked it).
fn with_transfer(m: &Manager, path: &str, f: impl Fn(&transfer::Transfer) -> Value) -> Value {
    transfer::id_of(path)
        .and_then(|id| m.transfers.get(&id))
        .map_or(Value::Str(String::new()), f)
}

/// Run `then` once the caller is allowed to perform `action`.
fn authorized(
    lp: &mut EventLoop<Manager>,
    m: &mut Manager,
    call: Call,
    action: &'static str,
    then: fn(&mut EventLoop<Manager>, &mut Manager, Call) -> Handled,
) -> Handled {
    let r = m
        .bus
        .authorize(lp, call, action, move |lp, m, call, verdict| {
            let handled = match verdict {
                Ok(()) => then(lp, m, call),
                Err(e) => call.fail(e),
            };
            m.bus.finish(lp, handled);
        });
    match r {
        Ok(()) => Handled::Later,
        Err((call, e)) => call.fail(e),
    }
}

/// Start the transfer of a request that passed its checks, and answer `(id, path)`.
fn start(
    lp: &mut EventLoop<Manager>,
    m: &mut Manager,
    call: Call,
    checked: Result<PullRequest, BusError>,
) -> Handled {
    match checked.and_then(|req| m.start_transfer(lp, req)) {
        Ok((id, path)) => call.ok((id, Path::from(path))),
        Err(e) => call.fail(e),
    }
}

/// `PullTar`, `PullRaw`, `PullTarEx`, `PullRawEx`.
fn pull_url(lp: &mut EventLoop<Manager>, m: &mut Manager, call: Call) -> Handled {
    authorized(lp, m, call, ACTION_PULL, |lp, m, call| {
        let member = call.member();
        let kind = if member.starts_with("PullTar") {
            TransferType::PullTar
        } else {
            TransferType::PullRaw
        };
        let msg = call.message();
        let (url, local, class, verify, flags) = if member.ends_with("Ex") {
            let (url, local, class, verify, flags) = msg
                .read5::<&str, &str, &str, &str, u64>()
                .expect("signature checked");
            (url, local, Some(class), verify, flags)
        } else {
            let (url, local, verify, force) = msg
                .read4::<&str, &str, &str, bool>()
                .expect("signature checked");
            let flags = if force { request::FLAG_FORCE } else { 0 };
            (url, local, None, verify, flags)
        };
        let args = UrlArgs {
            url,
            local,
            class,
            verify,
            flags,
        };
        let checked = request::url_pull(kind, args);
        start(lp, m, call, checked)
    })
}

fn pull_oci(lp: &mut EventLoop<Manager>, m: &mut Manager, call: Call) -> Handled {
    authorized(lp, m, call, ACTION_PULL, |lp, m, call| {
        let (reference, local, class, flags) = call
            .message()
            .read4::<&str, &str, &str, u64>()
            .expect("signature checked");
        let checked = request::oci_pull(reference, local, class, flags);
        start(lp, m, call, checked)
    })
}

fn pull_dkr(lp: &mut EventLoop<Manager>, m: &mut Manager, call: Call) -> Handled {
    authorized(lp, m, call, ACTION_PULL, |lp, m, call| {
        let mut it = call.message().iter_init();
        let mut text = || it.read::<&str>().expect("signature checked");
        let (index_url, remote, tag, local, verify) = (text(), text(), text(), text(), text());
        let force = it.read::<bool>().expect("signature checked");
        let checked = request::dkr_pull(DkrArgs {
            index_url,
            remote,
            tag,
            local,
            verify,
            force,
        });
        start(lp, m, call, checked)
    })
}

/// The `(class, flags)` arguments of `ListTransfersEx` and `ListImages`, checked.
fn class_filter(call: &Call) -> Result<Option<request::ImageClass>, BusError> {
    let (class, flags) = call
        .message()
        .read2::<&str, u64>()
        .expect("signature checked");
    request::list_filter(class, flags)
}

/// `ListTransfers` (`a(usssdo)`) and `ListTransfersEx` (`a(ussssdo)`, class filter).
fn list_transfers(_: &mut EventLoop<Manager>, m: &mut Manager, call: Call) -> Handled {
    if call.member() == "ListTransfersEx" {
        let filter = match class_filter(&call) {
            Ok(f) => f,
            Err(e) => return call.fail(e),
        };
        let rows: Vec<_> = m
            .transfers
            .values()
            .filter(|t| filter.is_none_or(|c| c == t.request.class))
            .map(|t| {
                (
                    t.id,
                    t.request.kind.as_str(),
                    t.request.remote.clone(),
                    t.request.local.clone().unwrap_or_default(),
                    t.request.class.as_str(),
                    t.progress_value(),
                    Path::from(t.path.clone()),
                )
            })
            .collect();
        return call.ok((rows,));
    }
    let rows: Vec<_> = m
        .transfers
        .values()
        .map(|t| {
            (
                t.id,
                t.request.kind.as_str(),
                t.request.remote.clone(),
                t.request.local.clone().unwrap_or_default(),
                t.progress_value(),
                Path::from(t.path.clone()),
            )
        })
        .collect();
    call.ok((rows,))
}

fn cancel_transfer(lp: &mut EventLoop<Manager>, m: &mut Manager, call: Call) -> Handled {
    authorized(lp, m, call, ACTION_CANCEL, |_, m, call| {
        let id: u32 = call.message().read1().expect("signature checked");
        if id == 0 {
            return call.fail(BusError::invalid_args("Invalid transfer id"));
        }
        match m.cancel(id) {
            Ok(()) => call.ok(()),
            Err(e) => call.fail(e),
        }
    })
}

/// `Transfer.Cancel()` (polkit action `pull`, as upstream).
fn transfer_cancel(lp: &mut EventLoop<Manager>, m: &mut Manager, call: Call) -> Handled {
    authorized(lp, m, call, ACTION_PULL, |_, m, call| {
        let path = call.path();
        // The transfer may have ended while polkit was asked.
        let Some(id) = transfer::id_of(&path).filter(|id| m.transfers.contains_key(id)) else {
            return call.fail(BusError::new(
                names::UNKNOWN_OBJECT,
                format!("Unknown object '{path}'."),
            ));
        };
        match m.cancel(id) {
            Ok(()) => call.ok(()),
            Err(e) => call.fail(e),
        }
    })
}

fn list_images(_: &mut EventLoop<Manager>, _: &mut Manager, call: Call) -> Handled {
    let filter = match class_filter(&call) {
        Ok(f) => f,
        Err(e) => return call.fail(e),
    };
    match images::discover(filter) {
        Ok(rows) => call.ok((rows,)),
        Err(e) => call.fail(BusError::from(e)),
    }
}
