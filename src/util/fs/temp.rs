//! Random temporary names next to a final path (`.#<name><16 hex digits>`), as
//! systemd's `tempfn_random` makes them. The last 8 digits are the same for every name
//! one process makes ([`process_token`]): they say who owns a temporary, so that a pull
//! can tell the leftovers of a dead process from the work of a live one
//! (`import::store`'s owner locks).

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::errno::Errno;

use crate::util::sys;

/// 64 random bits from the kernel (`getrandom(2)`).
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    let mut filled = 0;
    while filled < bytes.len() {
        match sys::getrandom(&mut bytes[filled..]) {
            Ok(n) => filled += n,
            Err(Errno::EINTR) => {}
            Err(_) => {
                // No getrandom (pre-3.17 kernel): std's per-process random hash keys
                // still give a name nobody can predict.
                use std::hash::{BuildHasher, Hasher};
                let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
                hasher.write_u64(u64::from_ne_bytes(bytes));
                return hasher.finish();
            }
        }
    }
    u64::from_ne_bytes(bytes)
}

/// This process's 32 random bits, drawn once.
fn token() -> u64 {
    static TOKEN: OnceLock<u64> = OnceLock::new();
    *TOKEN.get_or_init(|| random_u64() & 0xffff_ffff)
}

/// The 8 hex digits that end every temporary name this process makes.
pub fn process_token() -> String {
    hex_low_first(token(), 8)
}

/// The owner's token of a temporary name made by [`tempfn_random`] (its last 8 of 16
/// hex digits), or `None` if `name` is not one.
pub fn temp_owner(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(".#")?;
    let hex = rest.get(rest.len().checked_sub(16)?..)?;
    hex.bytes()
        .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        .then(|| &hex[8..])
}

/// A random temporary name next to `path`: `<dir>/.#<basename><16 hex digits>`: 32 random
/// bits, then the [`process_token`]. The number is written low nibble first, as systemd's
/// `tempfn_random` does.
pub fn tempfn_random(path: &Path) -> PathBuf {
    temp_name(path, (random_u64() & 0xffff_ffff) | (token() << 32))
}

fn hex_low_first(mut r: u64, digits: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    (0..digits)
        .map(|_| {
            let c = HEX[(r & 0xf) as usize] as char;
            r >>= 4;
            c
        })
        .collect()
}

fn temp_name(path: &Path, r: u64) -> PathBuf {
    let mut name = b".#".to_vec();
    name.extend_from_slice(path.file_name().unwrap_or_default().as_bytes());
    name.extend_from_slice(hex_low_first(r, 16).as_bytes());
    let name = OsString::from_vec(name);
    match path.file_name() {
        Some(_) => path.with_file_name(name),
        None => path.join(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_put_the_low_nibble_first() {
        assert_eq!(
            temp_name(
                Path::new("/var/lib/machines/.raw-x.raw"),
                0x0123_4567_89ab_cdef
            ),
            Path::new("/var/lib/machines/.#.raw-x.rawfedcba9876543210")
        );
        assert_eq!(
            temp_name(Path::new("foo"), 1),
            Path::new(".#foo1000000000000000")
        );
        let a = tempfn_random(Path::new("/x/image"));
        let b = tempfn_random(Path::new("/x/image"));
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_str().unwrap();
        let hex = name.strip_prefix(".#image").unwrap();
        assert_eq!(hex.len(), 16);
        assert!(hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        assert_eq!(a.parent(), Some(Path::new("/x")));
        // Every name of this process ends with its token.
        assert_eq!(temp_owner(name), Some(process_token().as_str()));
        let b = b.file_name().unwrap().to_str().unwrap();
        assert_eq!(temp_owner(b), temp_owner(name));
        assert_eq!(temp_owner(".#x"), None);
        assert_eq!(temp_owner("image0123456789abcdef"), None);
        assert_eq!(temp_owner(".#x0123456789abcdeX"), None);
        assert_eq!(temp_owner(".#0123456789abcdef"), Some("89abcdef"));
    }
}
