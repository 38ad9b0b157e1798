//! Where a file's data lies: [`DataSegments`] walks it with `SEEK_DATA`/`SEEK_HOLE`, and
//! [`sparse_map`] turns that into the map a sparse tar member carries, with a bounded
//! number of segments.
//!
//! The segments are what the file system reports, so their edges fall on its block or
//! extent boundaries, as GNU tar's `--hole-detection=seek` sees them. A file system
//! without `SEEK_DATA` reports the whole file as one data segment.

use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use nix::unistd::{lseek, Whence};

use crate::util::error::Result;

/// The data segments `(offset, length)` of a file of `size` bytes, in order.
pub struct DataSegments<'a> {
    fd: BorrowedFd<'a>,
    size: u64,
    /// Where the next search starts; `size` once done.
    pos: u64,
}

impl<'a> DataSegments<'a> {
    pub fn new(fd: BorrowedFd<'a>, size: u64) -> Self {
        DataSegments { fd, size, pos: 0 }
    }

    fn next_segment(&mut self) -> Result<Option<(u64, u64)>> {
        if self.pos >= self.size {
            return Ok(None);
        }
        let data = match lseek(self.fd, self.pos as i64, Whence::SeekData) {
            Ok(data) => data as u64,
            // No data after `pos`: the rest is a hole.
            Err(Errno::ENXIO) => {
                self.pos = self.size;
                return Ok(None);
            }
            // No SEEK_DATA here: all of it is data.
            Err(Errno::EINVAL | Errno::EOPNOTSUPP) if self.pos == 0 => {
                self.pos = self.size;
                return Ok(Some((0, self.size)));
            }
            Err(e) => return Err(e.into()),
        };
        if data >= self.size {
            self.pos = self.size;
            return Ok(None);
        }
        let hole = match lseek(self.fd, data as i64, Whence::SeekHole) {
            Ok(hole) => (hole as u64).min(self.size),
            // Truncated between the two calls.
            Err(Errno::ENXIO) => self.size,
            Err(e) => return Err(e.into()),
        };
        self.pos = hole;
        Ok(Some((data, hole - data)))
    }
}

impl Iterator for DataSegments<'_> {
    type Item = Result<(u64, u64)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_segment().transpose()
    }
}

/// Merge neighbouring segments whose gap is smaller than `gap` (the gap's zeros become
/// data).
fn coalesce(map: &mut Vec<(u64, u64)>, gap: u64) {
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(map.len());
    for &(offset, len) in map.iter() {
        match out.last_mut() {
            Some((o, l)) if offset - (*o + *l) < gap => *l = offset + len - *o,
            _ => out.push((offset, len)),
        }
    }
    *map = out;
}

/// The sparse map of a file of `size` bytes: its data segments, at most `max_segments`
/// of them (beyond that the smallest holes are filled in, so the map and the memory
/// it takes stay bounded), ending with a zero-length segment at `size` when the file
/// ends in a hole. `None` if the file has no holes after all (one segment covering it).
pub fn sparse_map(
    fd: BorrowedFd<'_>,
    size: u64,
    max_segments: usize,
) -> Result<Option<Vec<(u64, u64)>>> {
    debug_assert!(max_segments >= 1);
    let mut map = Vec::new();
    let mut gap = 4096;
    for segment in DataSegments::new(fd, size) {
        let segment = segment?;
        if segment.1 > 0 {
            map.push(segment);
        }
        if map.len() >= 2 * max_segments {
            while map.len() > max_segments {
                coalesce(&mut map, gap);
                gap *= 2;
            }
        }
    }
    while map.len() > max_segments {
        coalesce(&mut map, gap);
        gap *= 2;
    }
    if map == [(0, size)] {
        return Ok(None);
    }
    if map.last().is_none_or(|&(o, l)| o + l < size) {
        map.push((size, 0));
    }
    Ok(Some(map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileExt;

    fn file_with(data_at: &[(u64, usize)], size: u64) -> std::fs::File {
        let f = tempfile::tempfile_in("/var/tmp").unwrap();
        for &(offset, len) in data_at {
            f.write_all_at(&vec![0xa5; len], offset).unwrap();
        }
        f.set_len(size).unwrap();
        f
    }

    #[test]
    fn holes_between_and_after_data_are_found() {
        let f = file_with(&[(0, 4096), (1 << 20, 8192)], 4 << 20);
        let map = sparse_map(f.as_fd(), 4 << 20, 100).unwrap().unwrap();
        assert_eq!(map, [(0, 4096), (1 << 20, 8192), (4 << 20, 0)]);
    }

    #[test]
    fn a_dense_file_has_no_map_and_an_empty_one_only_its_end() {
        let dense = file_with(&[(0, 20_000)], 20_000);
        assert_eq!(sparse_map(dense.as_fd(), 20_000, 100).unwrap(), None);
        let empty = file_with(&[], 1 << 20);
        assert_eq!(
            sparse_map(empty.as_fd(), 1 << 20, 100).unwrap(),
            Some(vec![(1 << 20, 0)])
        );
    }

    #[test]
    fn too_many_segments_are_merged_over_the_smallest_holes() {
        // 64 data blocks, each followed by a one-block hole, then a 1 MiB hole and one
        // more block.
        let mut at: Vec<(u64, usize)> = (0..64).map(|i| (i * 8192, 4096)).collect();
        at.push((64 * 8192 + (1 << 20), 4096));
        let size = 64 * 8192 + (1 << 20) + 4096;
        let f = file_with(&at, size);
        let map = sparse_map(f.as_fd(), size, 8).unwrap().unwrap();
        assert!(map.len() <= 8, "{map:?}");
        // Every data block still lies inside a segment; the big hole stayed a hole.
        for (offset, len) in at {
            let inside = |&&(o, l): &&(u64, u64)| o <= offset && offset + len as u64 <= o + l;
            assert!(map.iter().find(inside).is_some(), "{offset} lost: {map:?}");
        }
        assert_eq!(*map.last().unwrap(), (64 * 8192 + (1 << 20), 4096));
        assert!(map[map.len() - 2].0 + map[map.len() - 2].1 <= 64 * 8192);
    }
}
