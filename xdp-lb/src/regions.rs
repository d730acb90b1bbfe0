//! First-fit allocation of slot ranges in `maglev_tables`.

/// Free ranges of a fixed area, kept sorted and merged.
#[derive(Debug)]
pub struct RegionAllocator {
    /// (start, len), sorted by start, never adjacent.
    free: Vec<(u32, u32)>,
}

impl RegionAllocator {
    pub fn new(capacity: u32) -> Self {
        let free = if capacity > 0 {
            vec![(0, capacity)]
        } else {
            Vec::new()
        };
        Self { free }
    }

    /// The start of a free range of `len` slots, or `None` when no range is large enough.
    pub fn alloc(&mut self, len: u32) -> Option<u32> {
        if len == 0 {
            return None;
        }
        let pos = self.free.iter().position(|&(_, l)| l >= len)?;
        let (start, l) = self.free[pos];
        if l == len {
            self.free.remove(pos);
        } else {
            self.free[pos] = (start + len, l - len);
        }
        Some(start)
    }

    /// Takes exactly `start..start + len` (a range an earlier agent was using); false when
    /// any of it is not free.
    pub fn reserve(&mut self, start: u32, len: u32) -> bool {
        let Some(pos) = self.free.iter().position(|&(s, l)| {
            s <= start && u64::from(start) + u64::from(len) <= u64::from(s) + u64::from(l)
        }) else {
            return false;
        };
        let (s, l) = self.free[pos];
        self.free.remove(pos);
        let end = start + len;
        if end < s + l {
            self.free.insert(pos, (end, s + l - end));
        }
        if start > s {
            self.free.insert(pos, (s, start - s));
        }
        true
    }

    /// Returns a range given by `alloc`.
    pub fn free(&mut self, start: u32, len: u32) {
        if len == 0 {
            return;
        }
        let pos = self.free.partition_point(|&(s, _)| s < start);
        self.free.insert(pos, (start, len));
        // Merge with the next range, then with the previous one.
        if pos + 1 < self.free.len() && start + len == self.free[pos + 1].0 {
            self.free[pos].1 += self.free[pos + 1].1;
            self.free.remove(pos + 1);
        }
        if pos > 0 && self.free[pos - 1].0 + self.free[pos - 1].1 == start {
            self.free[pos - 1].1 += self.free[pos].1;
            self.free.remove(pos);
        }
    }

    /// Slots not allocated.
    pub fn free_slots(&self) -> u64 {
        self.free.iter().map(|&(_, l)| l as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_handed_out_back_to_back_until_the_area_is_full() {
        let mut a = RegionAllocator::new(100);
        assert_eq!(a.alloc(40), Some(0));
        assert_eq!(a.alloc(40), Some(40));
        assert_eq!(a.alloc(40), None);
        assert_eq!(a.alloc(20), Some(80));
        assert_eq!(a.free_slots(), 0);
    }

    #[test]
    fn freed_ranges_merge_so_a_large_table_fits_again() {
        let mut a = RegionAllocator::new(90);
        let x = a.alloc(30).unwrap();
        let y = a.alloc(30).unwrap();
        let z = a.alloc(30).unwrap();
        a.free(y, 30);
        a.free(x, 30);
        assert_eq!(a.alloc(60), Some(0));
        a.free(z, 30);
        a.free(0, 60);
        assert_eq!(a.free_slots(), 90);
        assert_eq!(a.alloc(90), Some(0));
    }

    #[test]
    fn a_range_in_use_elsewhere_can_be_reserved_exactly_once() {
        let mut a = RegionAllocator::new(100);
        assert!(a.reserve(30, 20));
        assert!(!a.reserve(40, 20), "overlaps the reserved range");
        assert!(!a.reserve(90, 20), "beyond the area");
        assert_eq!(a.alloc(30), Some(0));
        assert_eq!(a.alloc(40), Some(50));
        assert_eq!(a.free_slots(), 10);
    }

    #[test]
    fn an_empty_request_or_area_gives_nothing() {
        assert_eq!(RegionAllocator::new(0).alloc(1), None);
        assert_eq!(RegionAllocator::new(10).alloc(0), None);
    }
}
