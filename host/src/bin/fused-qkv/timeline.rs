//! `fused-qkv bench --timeline`: where a `wgmma` stream-K block's time goes, tile by tile, from
//! the clock stamps a `timeline` build writes ([`fused_qkv::kernel_abi::timeline`]): each block's
//! lead (start to its first tile: the wait for the kernel before it), per whole tile its
//! mainloop (loads and MMAs) and epilogue (row scales, staging, stores, each to its barrier),
//! the tail steps (their exchange of partials, part by part), and the spread of the blocks' starts and ends.

use serde_json::{json, Value};

use fused_qkv::kernel_abi::timeline::*;

/// One walk step: (tile, first k-block, k-blocks) and its stamps in ns from the block's start.
#[derive(Clone, Copy)]
struct Item {
    count: u32,
    start: f64,
    multiplied: f64,
    scaled: f64,
    /// `None` where the epilogue stored pair by pair.
    staged: Option<f64>,
    stored: f64,
    /// A tail step's exchange of partials: its partial written, its flag raised, the other
    /// blocks' flags seen, their partials landed, their flags lowered (`None` elsewhere).
    exchange: Option<[f64; 5]>,
}

/// One block's record, in ns from its start.
struct Block {
    sm: u64,
    start_ns: u64,
    end_ns: u64,
    /// Walk steps taken; `items` holds the first [`MAX_ITEMS`].
    steps: u64,
    items: Vec<Item>,
}

/// The records of the blocks that ran to their end (the grid may have fewer blocks than the
/// timeline has room for).
fn written(words: &[u64]) -> impl Iterator<Item = &[u64]> {
    words.chunks_exact(WORDS_PER_BLOCK).filter(|w| w[HEADER_END_NS] != 0)
}

/// The written blocks' words, in order, for the raw record.
pub fn written_words(words: &[u64]) -> Vec<u64> {
    written(words).flatten().copied().collect()
}

fn blocks(words: &[u64], k_blocks: u32) -> Vec<Block> {
    written(words)
        .map(|w| {
            let clocks = w[HEADER_END_CLOCK].wrapping_sub(w[HEADER_START_CLOCK]).max(1) as f64;
            let ns_per_clock = w[HEADER_END_NS].wrapping_sub(w[HEADER_START_NS]) as f64 / clocks;
            let at = |clock: u64| clock.wrapping_sub(w[HEADER_START_CLOCK]) as f64 * ns_per_clock;
            let items = (0..(w[HEADER_ITEMS] as usize).min(MAX_ITEMS))
                .map(|i| {
                    let item = &w[HEADER_WORDS + i * ITEM_WORDS..][..ITEM_WORDS];
                    let (_, _, count) = unpack_step(item[ITEM_STEP]);
                    Item {
                        count,
                        start: at(item[ITEM_START]),
                        multiplied: at(item[ITEM_MULTIPLIED]),
                        scaled: at(item[ITEM_SCALED]),
                        staged: (item[ITEM_STAGED] != 0).then(|| at(item[ITEM_STAGED])),
                        stored: at(item[ITEM_STORED]),
                        exchange: (count < k_blocks && item[ITEM_LOWERED] != 0).then(|| {
                            [ITEM_LEAVE_WRITTEN, ITEM_LEFT, ITEM_SEEN, ITEM_LANDED, ITEM_LOWERED].map(|w| at(item[w]))
                        }),
                    }
                })
                .collect();
            let steps = w[HEADER_ITEMS];
            Block { sm: w[HEADER_SM], start_ns: w[HEADER_START_NS], end_ns: w[HEADER_END_NS], steps, items }
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| v[v.len() / 2])
}

fn max(v: impl Iterator<Item = f64>) -> Option<f64> {
    v.fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
}

/// The summary of one launch's stamps (`k_blocks`: of a whole tile), in us: medians over blocks
/// or over whole tiles; `None` where no block wrote (a split-K grid, or a non-`wgmma` kernel).
pub fn summary(words: &[u64], k_blocks: u32) -> Option<Value> {
    let blocks = blocks(words, k_blocks);
    let first_start = blocks.iter().map(|b| b.start_ns).min()?;
    let us = |ns: f64| ns * 1e-3;
    // Whole tiles, or tail steps, each block's in order.
    let whole = |b: &Block| b.items.iter().filter(|i| i.count == k_blocks).copied().collect::<Vec<_>>();
    let tails = |b: &Block| b.items.iter().filter(|i| i.count < k_blocks).copied().collect::<Vec<_>>();
    // The median of `f` over the items `pick` takes from every block.
    let over = |pick: &dyn Fn(&Block) -> Vec<Item>, f: &dyn Fn(&Item) -> Option<f64>| {
        median(blocks.iter().flat_map(pick).filter_map(|i| f(&i)).collect())
    };
    let of_whole = |f: &dyn Fn(&Item) -> Option<f64>| over(&whole, f);
    let of_tails = |f: &dyn Fn(&Item) -> Option<f64>| over(&tails, f);
    let lead = median(blocks.iter().filter_map(|b| b.items.first().map(|i| i.start)).collect());
    let mainloop = of_whole(&|i| Some(i.multiplied - i.start));
    // The first tile's mainloop fills the ring from nothing; later ones start with part of it loaded.
    let mainloop_later =
        median(blocks.iter().flat_map(|b| whole(b).into_iter().skip(1).map(|i| i.multiplied - i.start)).collect());
    let scale = of_whole(&|i| Some(i.scaled - i.multiplied));
    let stage = of_whole(&|i| i.staged.map(|s| s - i.scaled));
    let copy = of_whole(&|i| Some(i.stored - i.staged.unwrap_or(i.scaled)));
    let epilogue = of_whole(&|i| Some(i.stored - i.multiplied));
    let gap = median(
        blocks.iter().flat_map(|b| b.items.windows(2).map(|w| w[1].start - w[0].stored).collect::<Vec<_>>()).collect(),
    );
    let tail_mainloop = of_tails(&|i| Some(i.multiplied - i.start));
    let tail_exchange = of_tails(&|i| Some(i.scaled - i.multiplied));
    let tail_epilogue = of_tails(&|i| Some(i.stored - i.multiplied));
    // The exchange's parts, each from the stamp before it.
    let part = |n: usize| of_tails(&|i| i.exchange.map(|e| e[n] - if n == 0 { i.multiplied } else { e[n - 1] }));
    let tail_add = of_tails(&|i| i.exchange.map(|e| i.scaled - e[4]));
    let after_last = median(
        blocks.iter().filter_map(|b| b.items.last().map(|i| (b.end_ns - b.start_ns) as f64 - i.stored)).collect(),
    );
    let span = max(blocks.iter().map(|b| (b.end_ns - first_start) as f64))?;
    let start_spread = max(blocks.iter().map(|b| (b.start_ns - first_start) as f64))?;
    let end_first = blocks.iter().map(|b| b.end_ns).min()? - first_start;
    let sms = {
        let mut s: Vec<u64> = blocks.iter().map(|b| b.sm).collect();
        s.sort_unstable();
        s.dedup();
        s.len()
    };
    let o = |v: Option<f64>| v.map(us);
    Some(json!({
        "blocks": blocks.len(), "sms": sms,
        "items_max": blocks.iter().map(|b| b.items.len()).max(),
        "steps_max": blocks.iter().map(|b| b.steps).max(),
        "span_us": us(span), "start_spread_us": us(start_spread), "first_end_us": us(end_first as f64),
        "lead_us": o(lead), "mainloop_us": o(mainloop), "mainloop_later_us": o(mainloop_later),
        "mainloop_per_k_block_us": o(mainloop_later.or(mainloop)).map(|t| t / k_blocks as f64),
        "epilogue_us": o(epilogue), "scale_us": o(scale), "stage_us": o(stage), "copy_us": o(copy),
        "gap_us": o(gap),
        "tail_mainloop_us": o(tail_mainloop), "tail_exchange_us": o(tail_exchange), "tail_epilogue_us": o(tail_epilogue),
        "tail_write_us": o(part(0)), "tail_release_us": o(part(1)), "tail_wait_us": o(part(2)),
        "tail_land_us": o(part(3)), "tail_lower_us": o(part(4)), "tail_add_us": o(tail_add),
        "after_last_us": o(after_last),
    }))
}

/// One line of a summary, for the terminal.
pub fn line(name: &str, m: usize, s: &Value) -> String {
    let f = |k: &str| s[k].as_f64().map_or("-".into(), |v| format!("{v:.2}"));
    format!(
        "timeline {name} M={m}: {} blocks on {} SMs, <= {} steps ({} recorded); span {} us (starts spread {}, first end {}); \
         lead {}; whole tile: mainloop {} (later tiles {}, {} per k-block), epilogue {} (scales {}, staging {}, \
         stores {}); gap {}; tail: mainloop {}, epilogue {} (exchange {}: write {}, release {}, wait {}, land {}, \
         lower {}, add and scale {}); after the last recorded step {}",
        s["blocks"],
        s["sms"],
        s["steps_max"],
        s["items_max"],
        f("span_us"),
        f("start_spread_us"),
        f("first_end_us"),
        f("lead_us"),
        f("mainloop_us"),
        f("mainloop_later_us"),
        f("mainloop_per_k_block_us"),
        f("epilogue_us"),
        f("scale_us"),
        f("stage_us"),
        f("copy_us"),
        f("gap_us"),
        f("tail_mainloop_us"),
        f("tail_epilogue_us"),
        f("tail_exchange_us"),
        f("tail_write_us"),
        f("tail_release_us"),
        f("tail_wait_us"),
        f("tail_land_us"),
        f("tail_lower_us"),
        f("tail_add_us"),
        f("after_last_us"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block's words: SM, start at `start_ns` (clock 1000, 1 ns per clock), `items` as
    /// (k-blocks, start, multiplied, scaled, staged, stored) in ns from the block's start.
    fn block(sm: u64, start_ns: u64, end: u64, items: &[(u32, u64, u64, u64, u64, u64)]) -> Vec<u64> {
        let mut w = vec![0u64; WORDS_PER_BLOCK];
        let clock = |ns: u64| 1000 + ns;
        w[HEADER_SM] = sm;
        w[HEADER_START_NS] = start_ns;
        w[HEADER_START_CLOCK] = clock(0);
        w[HEADER_END_NS] = start_ns + end;
        w[HEADER_END_CLOCK] = clock(end);
        w[HEADER_ITEMS] = items.len() as u64;
        for (i, &(count, start, multiplied, scaled, staged, stored)) in items.iter().enumerate() {
            let item = &mut w[HEADER_WORDS + i * ITEM_WORDS..][..ITEM_WORDS];
            item[ITEM_STEP] = pack_step(i as u32, 0, count);
            item[ITEM_START] = clock(start);
            item[ITEM_MULTIPLIED] = clock(multiplied);
            item[ITEM_SCALED] = clock(scaled);
            item[ITEM_STAGED] = clock(staged);
            item[ITEM_STORED] = clock(stored);
            if count < 16 {
                // The exchange in five equal parts of the time from the MMAs to the row scales,
                // the last ending 0.5 us before them.
                let part = (scaled - multiplied - 500) / 5;
                let stamps = [ITEM_LEAVE_WRITTEN, ITEM_LEFT, ITEM_SEEN, ITEM_LANDED, ITEM_LOWERED];
                for (n, w) in stamps.into_iter().enumerate() {
                    item[w] = clock(multiplied + part * (n as u64 + 1));
                }
            }
        }
        w
    }

    #[test]
    fn summary_reads_the_stamps() {
        // Two blocks of two whole tiles (16 k-blocks) each; the second also has a tail step.
        let mut words = block(
            3,
            5_000,
            30_000,
            &[(16, 1_000, 11_000, 11_500, 12_000, 13_000), (16, 13_400, 23_400, 23_900, 24_400, 25_400)],
        );
        words.extend(block(
            7,
            6_000,
            40_000,
            &[
                (16, 2_000, 12_000, 12_500, 13_000, 14_000),
                (16, 14_400, 24_400, 24_900, 25_400, 26_400),
                (8, 26_800, 31_800, 35_800, 36_300, 37_300),
            ],
        ));
        // A block that never ran leaves its words zero and is skipped.
        words.extend(vec![0; WORDS_PER_BLOCK]);
        let s = summary(&words, 16).expect("two blocks wrote");
        let us = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
        assert_eq!(s["blocks"], 2);
        assert_eq!(s["sms"], 2);
        assert_eq!(s["items_max"], 3);
        assert_eq!(s["steps_max"], 3);
        assert!((us("mainloop_us") - 10.0).abs() < 1e-9);
        assert!((us("mainloop_per_k_block_us") - 10.0 / 16.0).abs() < 1e-9);
        assert!((us("scale_us") - 0.5).abs() < 1e-9);
        assert!((us("stage_us") - 0.5).abs() < 1e-9);
        assert!((us("copy_us") - 1.0).abs() < 1e-9);
        assert!((us("epilogue_us") - 2.0).abs() < 1e-9);
        assert!((us("gap_us") - 0.4).abs() < 1e-9);
        assert!((us("tail_mainloop_us") - 5.0).abs() < 1e-9);
        assert!((us("tail_exchange_us") - 4.0).abs() < 1e-9);
        for part in ["tail_write_us", "tail_release_us", "tail_wait_us", "tail_land_us", "tail_lower_us"] {
            assert!((us(part) - 0.7).abs() < 1e-9, "{part}");
        }
        assert!((us("tail_add_us") - 0.5).abs() < 1e-9);
        // Whole tiles carry no exchange.
        assert!(blocks(&words, 16)[0].items.iter().all(|i| i.exchange.is_none()));
        // Block 2 starts 1 us after block 1 and ends 41 us after it.
        assert!((us("start_spread_us") - 1.0).abs() < 1e-9);
        assert!((us("span_us") - 41.0).abs() < 1e-9);
        assert!((us("first_end_us") - 30.0).abs() < 1e-9);
        // Nothing written: no summary.
        assert!(summary(&vec![0; 2 * WORDS_PER_BLOCK], 16).is_none());
    }
}
