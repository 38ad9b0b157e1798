//! Source ids and the table that hands them out: [`SourceId`] (slot index + generation),
//! the enable states ([`Enabled`]), priorities, and [`Slots`], the generation-checked slot
//! table the loop keeps its sources in (calloop's `token.rs` + `list.rs`).
//!
//! A removed source's id never matches a later source, even one that reuses the same slot:
//! the slot's generation is bumped on removal. So a stale epoll event (or a stale id kept by
//! an owner) is dropped instead of reaching the wrong callback.

/// Priorities as sd-event names them: lower runs first.
pub const PRIORITY_IMPORTANT: i64 = -100;
pub const PRIORITY_NORMAL: i64 = 0;
pub const PRIORITY_IDLE: i64 = 100;

/// Identifies a source of one loop.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SourceId {
    idx: u32,
    generation: u32,
}

impl SourceId {
    /// Packs the id into an epoll event's `u64`.
    pub(super) fn to_u64(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.idx)
    }

    pub(super) fn from_u64(v: u64) -> Self {
        SourceId {
            idx: v as u32,
            generation: (v >> 32) as u32,
        }
    }
}

/// sd-event's SD_EVENT_OFF / SD_EVENT_ON / SD_EVENT_ONESHOT.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Enabled {
    Off,
    On,
    Oneshot,
}

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// A slot table whose ids carry the slot's generation.
pub(super) struct Slots<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
}

impl<T> Slots<T> {
    pub(super) fn new() -> Self {
        Slots {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Store `value` in a free slot (or a new one) and return its id.
    pub(super) fn insert(&mut self, value: T) -> SourceId {
        let idx = match self.free.pop() {
            Some(idx) => idx,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    value: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[idx as usize];
        debug_assert!(slot.value.is_none());
        slot.value = Some(value);
        SourceId {
            idx,
            generation: slot.generation,
        }
    }

    /// The value `id` names, unless the id is stale.
    pub(super) fn get(&self, id: SourceId) -> Option<&T> {
        let slot = self.slots.get(id.idx as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.value.as_ref()
    }

    pub(super) fn get_mut(&mut self, id: SourceId) -> Option<&mut T> {
        let slot = self.slots.get_mut(id.idx as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.value.as_mut()
    }

    /// Take the value out; the slot's next occupant gets a new generation.
    pub(super) fn remove(&mut self, id: SourceId) -> Option<T> {
        let slot = self.slots.get_mut(id.idx as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.idx);
        Some(value)
    }

    /// Every live value with its id, in slot order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (SourceId, &T)> {
        self.slots.iter().enumerate().filter_map(|(idx, slot)| {
            let id = SourceId {
                idx: idx as u32,
                generation: slot.generation,
            };
            slot.value.as_ref().map(|v| (id, v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_slot_gets_a_new_generation() {
        let mut slots = Slots::new();
        let a = slots.insert("a");
        assert_eq!(slots.remove(a), Some("a"));
        let b = slots.insert("b");
        assert_ne!(a, b, "same slot, new generation");
        assert_eq!(slots.get(a), None, "the stale id finds nothing");
        assert_eq!(slots.remove(a), None, "nor removes the new occupant");
        assert_eq!(slots.get(b), Some(&"b"));
    }

    #[test]
    fn ids_survive_the_epoll_key_round_trip() {
        let mut slots = Slots::new();
        for _ in 0..3 {
            let id = slots.insert(());
            slots.remove(id);
        }
        let id = slots.insert(());
        assert_eq!(SourceId::from_u64(id.to_u64()), id);
        assert_eq!(slots.iter().map(|(id, _)| id).collect::<Vec<_>>(), [id]);
    }
}
