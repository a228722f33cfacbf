//! The calibration engine's prefix cache: the known answer for prefix-cache hits.
//!
//! It models vLLM's automatic prefix caching closely enough that a workload's hit rate
//! can be computed by hand: the cache holds whole blocks of `block` tokens, each
//! identified by the hash of its tokens chained to its parent's, so a block matches
//! only when everything before it matches too. A prompt's cached tokens are its
//! leading blocks already in the cache, at most `len - 1` tokens (the last prompt
//! token is always computed, as in vLLM, since its logits start the output). A
//! request's prompt blocks enter the cache when it is admitted (a later request
//! admitted in the same step already hits them), and its prompt + output blocks
//! when it finishes, so a conversation's next turn hits its previous turn's output
//! too. Capacity is in tokens; the least recently used block goes first.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

pub struct PrefixCache {
    block: usize,
    capacity_blocks: usize,
    /// Block hash → its last use.
    used: HashMap<u64, u64>,
    /// Last use → block hash: the eviction order.
    lru: BTreeMap<u64, u64>,
    tick: u64,
}

impl PrefixCache {
    /// A cache of `capacity_tokens` (rounded down to whole blocks) in blocks of `block`.
    pub fn new(capacity_tokens: u64, block: usize) -> PrefixCache {
        let block = block.max(1);
        PrefixCache {
            block,
            capacity_blocks: usize::try_from(capacity_tokens / block as u64).unwrap_or(usize::MAX),
            used: HashMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
        }
    }

    /// The chained hashes of the first `n` whole blocks of `tokens`.
    fn hashes<'t>(&self, tokens: &'t [u32], n: usize) -> impl Iterator<Item = u64> + 't {
        let mut parent = 0u64;
        tokens.chunks_exact(self.block).take(n).map(move |b| {
            // SipHash with fixed keys: the same blocks hash the same in every run.
            let mut h = std::hash::DefaultHasher::new();
            parent.hash(&mut h);
            b.hash(&mut h);
            parent = h.finish();
            parent
        })
    }

    fn touch(&mut self, hash: u64) {
        self.tick += 1;
        if let Some(old) = self.used.insert(hash, self.tick) {
            self.lru.remove(&old);
        }
        self.lru.insert(self.tick, hash);
    }

    /// Prompt tokens of `prompt` served from the cache: its leading cached blocks, at
    /// most `len - 1` tokens. Marks them used.
    pub fn lookup(&mut self, prompt: &[u32]) -> u32 {
        let eligible = prompt.len().saturating_sub(1) / self.block;
        let hits: Vec<u64> = self
            .hashes(prompt, eligible)
            .take_while(|h| self.used.contains_key(h))
            .collect();
        for &h in &hits {
            self.touch(h);
        }
        (hits.len() * self.block) as u32
    }

    /// Caches every whole block of `tokens`, evicting the least recently used blocks
    /// beyond the capacity.
    pub fn insert(&mut self, tokens: &[u32]) {
        let all: Vec<u64> = self.hashes(tokens, usize::MAX).collect();
        for h in all {
            self.touch(h);
        }
        while self.used.len() > self.capacity_blocks {
            let Some((_, h)) = self.lru.pop_first() else {
                break;
            };
            self.used.remove(&h);
        }
    }

    pub fn clear(&mut self) {
        self.used.clear();
        self.lru.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(r: std::ops::Range<u32>) -> Vec<u32> {
        r.collect()
    }

    #[test]
    fn hits_are_whole_leading_blocks_short_of_the_last_token() {
        let mut c = PrefixCache::new(1 << 20, 4);
        let a = ids(0..10);
        assert_eq!(c.lookup(&a), 0);
        c.insert(&a); // blocks 0..4, 4..8
        assert_eq!(c.lookup(&a), 8);
        // Same first block, different second: one block.
        let mut b = ids(0..10);
        b[5] = 99;
        assert_eq!(c.lookup(&b), 4);
        // A prompt of exactly 8 tokens may reuse only 7: one whole block.
        assert_eq!(c.lookup(&ids(0..8)), 4);
        assert_eq!(c.lookup(&ids(0..9)), 8);
        // A match needs its parent: block 4..8 after a different first block misses.
        let mut d = ids(0..10);
        d[0] = 77;
        assert_eq!(c.lookup(&d), 0);
    }

    #[test]
    fn the_least_recently_used_block_goes_first() {
        // Two blocks of 4 tokens.
        let mut c = PrefixCache::new(8, 4);
        let (a, b) = (ids(0..5), ids(100..105));
        c.insert(&a);
        c.insert(&b);
        assert_eq!((c.lookup(&a), c.lookup(&b)), (4, 4));
        c.lookup(&a); // a is now the most recent
        c.insert(&ids(200..205)); // evicts b
        assert_eq!((c.lookup(&a), c.lookup(&b)), (4, 0));
        c.clear();
        assert_eq!(c.lookup(&a), 0);
        // No capacity: nothing stays.
        let mut none = PrefixCache::new(3, 4);
        none.insert(&a);
        assert_eq!(none.lookup(&a), 0);
    }
}
