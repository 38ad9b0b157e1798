//! Random temporary names next to a final path (`.#<name><16 hex digits>`), as
//! systemd's `tempfn_random` makes them.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

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

/// A random temporary name next to `path`: `<dir>/.#<basename><16 hex digits>`. The
/// random number is written low nibble first, as systemd's `tempfn_random` does.
pub fn tempfn_random(path: &Path) -> PathBuf {
    temp_name(path, random_u64())
}

fn temp_name(path: &Path, mut r: u64) -> PathBuf {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut name = b".#".to_vec();
    name.extend_from_slice(path.file_name().unwrap_or_default().as_bytes());
    for _ in 0..16 {
        name.push(HEX[(r & 0xf) as usize]);
        r >>= 4;
    }
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
    }
}
