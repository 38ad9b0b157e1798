//! What systemd-importd and its clients must agree on: the names of the
//! `org.freedesktop.import1` API (bus name, paths, interfaces, error names), the flag bits
//! and image classes of its `…Ex` members, and this project's own extension interface
//! ([`EXT_TRANSFER_INTERFACE`]). Both `importd` (the daemon) and `importctl` (the client)
//! import this; neither imports the other.

/// The daemon's well-known name, its manager object and the interfaces.
pub const BUS_NAME: &str = "org.freedesktop.import1";
pub const MANAGER_PATH: &str = "/org/freedesktop/import1";
pub const MANAGER_INTERFACE: &str = "org.freedesktop.import1.Manager";
pub const TRANSFER_INTERFACE: &str = "org.freedesktop.import1.Transfer";

/// systemd's `BUS_ERROR_TRANSFER_IN_PROGRESS` and `BUS_ERROR_NO_SUCH_TRANSFER`.
pub const ERROR_TRANSFER_IN_PROGRESS: &str = "org.freedesktop.import1.TransferInProgress";
pub const ERROR_NO_SUCH_TRANSFER: &str = "org.freedesktop.import1.NoSuchTransfer";

/// `ImportFlags` bits of the `…Ex` members.
pub const FLAG_FORCE: u64 = 1;
pub const FLAG_READ_ONLY: u64 = 2;
pub const FLAG_KEEP_DOWNLOAD: u64 = 4;

/// This project's interface on each transfer object, next to upstream's
/// `org.freedesktop.import1.Transfer` (which stays exactly upstream's, so upstream clients
/// see nothing new). It carries what the worker reports beyond a percentage:
///
/// * properties `BytesDone t`, `BytesTotal t`, `Rate t` (bytes per second), each
///   `u64::MAX` while unknown, and `Layers a(uustt)`: per layer of a pull-oci, its index
///   (from 1), the number of layers, its state (`waiting`, `downloading`, `applying`, `done`:
///   [`crate::util::progress::LayerState`]), bytes done and bytes
///   total (`u64::MAX` unknown). None of them emits `PropertiesChanged`;
/// * signal `DetailsUpdate(d progress, t bytes_done, t bytes_total, t rate,
///   a(uustt) layers)`, sent whenever a worker's report changed any of them (`progress`
///   is the `Progress` property's value at that moment).
pub const EXT_TRANSFER_INTERFACE: &str = "io.github.systemd_import.Transfer1";
pub const DETAILS_UPDATE: &str = "DetailsUpdate";

/// A row of `ListImages`: class, name, type, path, read-only, crtime, mtime, usage,
/// usage exclusive, limit, limit exclusive (times in µs, sizes `u64::MAX` unknown).
pub type ImageRow = (
    String,
    String,
    String,
    String,
    bool,
    u64,
    u64,
    u64,
    u64,
    u64,
    u64,
);

/// Image classes (`--class=`), each with its own image directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ImageClass {
    Machine,
    Portable,
    Sysext,
    Confext,
}

impl ImageClass {
    pub const ALL: [ImageClass; 4] = [
        ImageClass::Machine,
        ImageClass::Portable,
        ImageClass::Sysext,
        ImageClass::Confext,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ImageClass::Machine => "machine",
            ImageClass::Portable => "portable",
            ImageClass::Sysext => "sysext",
            ImageClass::Confext => "confext",
        }
    }

    /// The class called `name` exactly.
    pub fn from_name(name: &str) -> Option<ImageClass> {
        ImageClass::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Where pulls of this class put their images (systemd's `image_root_pick()` for the
    /// system scope).
    pub fn root(self) -> &'static str {
        match self {
            ImageClass::Machine => "/var/lib/machines",
            ImageClass::Portable => "/var/lib/portables",
            ImageClass::Sysext => "/var/lib/extensions",
            ImageClass::Confext => "/var/lib/confexts",
        }
    }
}

/// `--verify=` modes of tar and raw pulls, by their names on the bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    No,
    Checksum,
    Signature,
}

impl Verify {
    pub const ALL: [Verify; 3] = [Verify::No, Verify::Checksum, Verify::Signature];

    pub fn as_str(self) -> &'static str {
        match self {
            Verify::No => "no",
            Verify::Checksum => "checksum",
            Verify::Signature => "signature",
        }
    }

    /// The mode called `name` exactly.
    pub fn from_name(name: &str) -> Option<Verify> {
        Verify::ALL.into_iter().find(|v| v.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in ImageClass::ALL {
            assert_eq!(ImageClass::from_name(c.as_str()), Some(c));
        }
        for v in Verify::ALL {
            assert_eq!(Verify::from_name(v.as_str()), Some(v));
        }
        assert_eq!(ImageClass::from_name("Machine"), None);
        assert_eq!(Verify::from_name(""), None);
        // D-Bus interface names: dot-separated elements of [A-Za-z0-9_], no leading digit.
        assert!(dbus::strings::Interface::new(EXT_TRANSFER_INTERFACE).is_ok());
    }
}
