//! [`Slots`]: a table of reusable slots, each held by one thing at a time (a request in
//! flight, a call running), with a generation per holder, so that whatever arrives late for
//! an earlier holder of a slot (a reply, an answer, a cancellation) is told apart from what
//! is meant for the one holding it now. Free slots are kept on a list and reused; the table
//! grows up to its bound and never shrinks, so that a slot costs no allocation once made.

/// A slot's index in its table.
pub(crate) type SlotId = u32;

/// Which holder of a slot: each new holder gets the next.
pub(crate) type Generation = u64;

#[derive(Debug)]
struct Entry<S> {
    generation: Generation,
    /// What the holder keeps there; `None` while the slot is free.
    value: Option<S>,
}

/// Slots, each free or held with a value `S`, and a free list.
#[derive(Debug)]
pub(crate) struct Slots<S> {
    entries: Vec<Entry<S>>,
    free: Vec<SlotId>,
    /// Most slots made.
    max: usize,
}

impl<S> Slots<S> {
    /// A table of at most `max` slots.
    pub(crate) fn new(max: usize) -> Self {
        Slots {
            entries: Vec::new(),
            free: Vec::new(),
            max,
        }
    }

    /// A table with no bound but the slots' index.
    pub(crate) fn unbounded() -> Self {
        Slots::new(SlotId::MAX as usize)
    }

    /// Reserves a free slot, or makes one while there are fewer than the bound, holding
    /// `value`; `None` when every slot is held.
    pub(crate) fn reserve(&mut self, value: S) -> Option<(SlotId, Generation)> {
        let id = match self.free.pop() {
            Some(id) => id,
            None if self.entries.len() < self.max => {
                self.entries.push(Entry {
                    generation: 0,
                    value: None,
                });
                (self.entries.len() - 1) as SlotId
            }
            None => return None,
        };
        let entry = &mut self.entries[id as usize];
        entry.value = Some(value);
        Some((id, entry.generation))
    }

    /// Hands held slot `id` to a new holder, with `value`, without freeing it: earlier
    /// generations are told apart from now on. Returns the new generation.
    pub(crate) fn reissue(&mut self, id: SlotId, value: S) -> Generation {
        let entry = &mut self.entries[id as usize];
        entry.generation += 1;
        entry.value = Some(value);
        entry.generation
    }

    /// Frees slot `id`, returning what it held; its holder's generation is over.
    pub(crate) fn release(&mut self, id: SlotId) -> Option<S> {
        let entry = self.entries.get_mut(id as usize)?;
        let value = entry.value.take()?;
        entry.generation += 1;
        self.free.push(id);
        Some(value)
    }

    /// What slot `id` holds for the holder of `generation`; `None` if it is free, or held
    /// by a later one (whatever arrived is late).
    pub(crate) fn get(&mut self, id: SlotId, generation: Generation) -> Option<&mut S> {
        let entry = self.entries.get_mut(id as usize)?;
        if entry.generation != generation {
            return None;
        }
        entry.value.as_mut()
    }

    /// Whether slot `id` is held by the holder of `generation`.
    pub(crate) fn holds(&self, id: SlotId, generation: Generation) -> bool {
        self.entries
            .get(id as usize)
            .is_some_and(|e| e.generation == generation && e.value.is_some())
    }

    /// What slot `id` holds, whoever holds it; `None` if it is free.
    pub(crate) fn get_any(&mut self, id: SlotId) -> Option<&mut S> {
        self.entries.get_mut(id as usize)?.value.as_mut()
    }

    /// The generation of slot `id`'s holder (or of its next one, if free).
    pub(crate) fn generation(&self, id: SlotId) -> Generation {
        self.entries[id as usize].generation
    }

    /// The first held slot whose value `mine` picks.
    pub(crate) fn find(&self, mut mine: impl FnMut(&S) -> bool) -> Option<SlotId> {
        self.entries
            .iter()
            .position(|e| e.value.as_ref().is_some_and(&mut mine))
            .map(|i| i as SlotId)
    }

    /// Slots held.
    pub(crate) fn held(&self) -> usize {
        self.entries.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reserved_up_to_the_bound_and_reused_once_released() {
        let mut slots = Slots::new(2);
        let (a, _) = slots.reserve('a').unwrap();
        let (b, _) = slots.reserve('b').unwrap();
        assert_ne!(a, b);
        assert_eq!(slots.reserve('c'), None, "at the bound");
        assert_eq!(slots.held(), 2);
        assert_eq!(slots.release(a), Some('a'));
        assert_eq!(slots.release(a), None, "already free");
        let (again, _) = slots.reserve('c').unwrap();
        assert_eq!(again, a, "the free slot is reused");
        assert_eq!(slots.get_any(again), Some(&mut 'c'));
    }

    #[test]
    fn a_late_arrival_for_an_earlier_holder_is_told_apart() {
        let mut slots = Slots::new(1);
        let (id, old) = slots.reserve("first").unwrap();
        assert_eq!(slots.get(id, old), Some(&mut "first"));
        slots.release(id);
        assert_eq!(slots.get(id, old), None, "free");
        let (same, new) = slots.reserve("second").unwrap();
        assert_eq!(same, id);
        assert_ne!(old, new);
        assert_eq!(slots.get(id, old), None, "held by a later holder");
        assert_eq!(slots.get(id, new), Some(&mut "second"));
    }

    #[test]
    fn a_slot_reissued_without_being_freed_ends_its_holders_generation() {
        let mut slots = Slots::new(1);
        let (id, old) = slots.reserve(1).unwrap();
        let new = slots.reissue(id, 2);
        assert_ne!(old, new);
        assert_eq!(slots.generation(id), new);
        assert_eq!(slots.get(id, old), None);
        assert_eq!(slots.get(id, new), Some(&mut 2));
        assert_eq!(slots.held(), 1);
    }

    #[test]
    fn a_held_slot_is_found_by_its_value() {
        let mut slots = Slots::new(4);
        let (a, _) = slots.reserve(10).unwrap();
        let (b, _) = slots.reserve(20).unwrap();
        slots.release(a);
        assert_eq!(slots.find(|v| *v == 20), Some(b));
        assert_eq!(
            slots.find(|v| *v == 10),
            None,
            "freed slots are not looked at"
        );
    }
}
