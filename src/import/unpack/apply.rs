//! The unpacker: the loop over the archive's members. Each member name is normalized,
//! the directories the stream has left get their attributes, and the member goes to
//! the [`Extractor`] as it is (plain mode) or through the [`Layer`] (aufs and oci
//! modes), which owns everything a layer means.

use std::os::fd::BorrowedFd;
use std::sync::mpsc::SyncSender;

use super::entry::Entry;
use super::extract::{Extractor, NoOverlay};
use super::handoff::Handoff;
use super::layer::{Flavour, Layer};
use super::reader::Reader;
use super::{show, Mode, Stats, Written};
use crate::util::error::Result;

/// How members are applied.
enum Applying {
    /// Every member extracted as it is.
    Plain,
    /// Members applied as a layer over the lower layers in the tree.
    Layer(Layer),
}

pub(super) struct Unpacker<'a> {
    extractor: Extractor<'a>,
    applying: Applying,
}

impl<'a> Unpacker<'a> {
    pub fn new(root: BorrowedFd<'a>, mode: Mode, max_depth: usize) -> Result<Self> {
        let extractor = Extractor::new(root, max_depth)?;
        let applying = match mode {
            Mode::Plain => Applying::Plain,
            Mode::Aufs => Applying::Layer(Layer::new(Flavour::Aufs)),
            Mode::Oci => Applying::Layer(Layer::new(Flavour::Oci)),
        };
        Ok(Unpacker {
            extractor,
            applying,
        })
    }

    /// Offer every regular file written to `queue` (see `Options::written`).
    pub fn hand_written_files_to(&mut self, queue: Option<SyncSender<Vec<Written>>>) {
        self.extractor.written = queue.map(Handoff::new);
    }

    /// Apply every entry of the stream, then the attributes of the directories still open.
    pub fn run(&mut self, reader: &mut Reader<'_>) -> Result<Stats> {
        while let Some(entry) = reader.next_entry()? {
            self.extractor.stats.entries += 1;
            self.apply_entry(reader, &entry)?;
        }
        // The last files' writeback starts while the directories get their attributes.
        if let Some(handoff) = &mut self.extractor.written {
            handoff.send();
        }
        self.extractor.leave_dirs(None)?;
        Ok(self.extractor.stats.clone())
    }

    /// Remove what only exists while unpacking (the aufs pseudo-link stash).
    pub fn cleanup(&mut self) -> Result<()> {
        match &mut self.applying {
            Applying::Plain => Ok(()),
            Applying::Layer(layer) => layer.cleanup(self.extractor.root()),
        }
    }

    fn apply_entry(&mut self, reader: &mut Reader<'_>, entry: &Entry) -> Result<()> {
        let path = self.extractor.normalize(&entry.name, &entry.name, false)?;
        self.extractor.leave_dirs(Some(&path))?;
        if let Some(t) = entry.unknown_type {
            log::warn!(
                "'{}': unknown file type '{}', extracted as a regular file.",
                show(&entry.name),
                t.escape_ascii()
            );
        }
        match &mut self.applying {
            Applying::Plain => self.extractor.extract(reader, entry, &path, &mut NoOverlay),
            Applying::Layer(layer) => layer.apply(&mut self.extractor, reader, entry, &path),
        }
    }
}
