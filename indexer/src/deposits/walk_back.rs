//! The walk back after a reorg, as pure functions over what the store
//! kept and what the node answers: which indexed blocks to compare, and
//! which of them is the common ancestor. The watcher does the asking; here
//! is only the deciding, so it is tested at every depth without a node.

use super::Cursor;

/// The indexed blocks the walk back compares, newest first: the kept
/// `recent` blocks (newest first) under the cursor, without those above the
/// node's `tip` (the node has nothing there yet, which proves nothing).
pub(super) fn walk_back_candidates(
    cursor: &Cursor,
    mut recent: Vec<Cursor>,
    tip: u64,
) -> Vec<Cursor> {
    if recent.first().map(|b| b.height) != Some(cursor.height) {
        recent.insert(0, cursor.clone());
    }
    recent.retain(|b| b.height <= tip);
    recent
}

/// The common ancestor of a reorg: the newest of `recent` (newest first)
/// whose hash is the node's at its height, where `canonical[i]` is the
/// node's hash at `recent[i].height` (`None`: no block there). `None` when
/// the node holds none of them.
pub(super) fn common_ancestor<'a>(
    recent: &'a [Cursor],
    canonical: &[Option<String>],
) -> Option<&'a Cursor> {
    recent
        .iter()
        .zip(canonical)
        .find(|(stored, hash)| hash.as_deref() == Some(stored.hash.as_str()))
        .map(|(stored, _)| stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(height: u64, branch: &str) -> Cursor {
        Cursor {
            height,
            hash: format!("{branch}{height}"),
        }
    }

    /// Indexed blocks `from..=to` of branch `a`, newest first.
    fn indexed(from: u64, to: u64) -> Vec<Cursor> {
        (from..=to).rev().map(|h| block(h, "a")).collect()
    }

    /// A node on branch `a` up to `fork`, branch `b` above it, with blocks
    /// up to `tip`: its hash at each of `recent`'s heights.
    fn node(recent: &[Cursor], fork: u64, tip: u64) -> Vec<Option<String>> {
        recent
            .iter()
            .map(|b| match b.height {
                h if h > tip => None,
                h if h > fork => Some(format!("b{h}")),
                h => Some(format!("a{h}")),
            })
            .collect()
    }

    #[test]
    fn the_ancestor_of_a_reorg_of_every_depth_is_the_fork_point() {
        let cursor = block(120, "a");
        for depth in 0..=20 {
            let recent = walk_back_candidates(&cursor, indexed(100, 120), 120);
            let canonical = node(&recent, 120 - depth, 120);
            assert_eq!(
                common_ancestor(&recent, &canonical),
                Some(&block(120 - depth, "a")),
                "depth {depth}"
            );
        }
    }

    #[test]
    fn a_reorg_below_every_kept_block_has_no_ancestor() {
        let cursor = block(120, "a");
        let recent = walk_back_candidates(&cursor, indexed(100, 120), 120);
        assert_eq!(common_ancestor(&recent, &node(&recent, 99, 120)), None);
        assert_eq!(common_ancestor(&[], &[]), None);
        // A node that answers no height at all holds none of them either.
        assert_eq!(common_ancestor(&recent, &vec![None; recent.len()]), None);
    }

    #[test]
    fn a_node_behind_the_cursor_is_compared_only_at_or_below_its_tip() {
        let cursor = block(120, "a");
        let recent = walk_back_candidates(&cursor, indexed(100, 120), 110);
        assert_eq!(recent.first(), Some(&block(110, "a")), "nothing above 110");
        assert_eq!(recent.len(), 11);
        // Holding the prefix: the newest block it has is the ancestor.
        assert_eq!(
            common_ancestor(&recent, &node(&recent, 110, 110)),
            Some(&block(110, "a"))
        );
        // Forked below its tip: the fork point.
        assert_eq!(
            common_ancestor(&recent, &node(&recent, 104, 110)),
            Some(&block(104, "a"))
        );
        // A tip below every kept block leaves nothing to compare.
        let recent = walk_back_candidates(&cursor, indexed(100, 120), 99);
        assert!(recent.is_empty());
    }

    #[test]
    fn the_cursor_heads_the_candidates_once() {
        let cursor = block(120, "a");
        // Missing from the kept blocks (a new install's anchor): added.
        let recent = walk_back_candidates(&cursor, Vec::new(), 120);
        assert_eq!(recent, vec![cursor.clone()]);
        let recent = walk_back_candidates(&cursor, indexed(100, 119), 200);
        assert_eq!(recent.first(), Some(&cursor));
        assert_eq!(recent.len(), 21);
        // Already the newest kept block: not twice.
        let recent = walk_back_candidates(&cursor, indexed(100, 120), 200);
        assert_eq!(recent.len(), 21);
    }

    #[test]
    fn heights_without_a_block_are_passed_over() {
        // Solana: skipped slots are never indexed, and the node has no
        // block at a height the other branch skipped.
        let cursor = block(120, "a");
        let kept: Vec<Cursor> = [120, 118, 115, 111, 110]
            .into_iter()
            .map(|h| block(h, "a"))
            .collect();
        let recent = walk_back_candidates(&cursor, kept, 120);
        let canonical = vec![
            Some("b120".to_owned()),
            None,
            Some("b115".to_owned()),
            None,
            Some("a110".to_owned()),
        ];
        assert_eq!(common_ancestor(&recent, &canonical), Some(&block(110, "a")));
    }

    proptest::proptest! {
        /// Against a model: the ancestor is the newest kept block at or
        /// below both the fork point and the node's tip.
        #[test]
        fn the_ancestor_is_the_newest_kept_block_below_the_fork_and_the_tip(
            heights in proptest::collection::btree_set(0u64..200, 1..60),
            fork in 0u64..220,
            tip in 0u64..220,
        ) {
            let kept: Vec<Cursor> = heights.iter().rev().map(|&h| block(h, "a")).collect();
            let cursor = kept[0].clone();
            let recent = walk_back_candidates(&cursor, kept.clone(), tip);
            let canonical = node(&recent, fork, tip);
            let expected = kept.iter().find(|b| b.height <= fork.min(tip));
            proptest::prop_assert_eq!(common_ancestor(&recent, &canonical), expected);
        }
    }
}
