//! A run's frame history under a memory budget. Every frame is kept until the history reaches
//! the budget; then the spacing between kept steps doubles (and again, as often as needed), so a
//! 1000-step run at batch 16 keeps an evenly spaced history in bounded memory. The first frame
//! (x_T) and the latest frame are always kept.

/// Appends `item` (step `step(&item)`, counting from 0 = x_T) to `frames`, keeping steps that are
/// multiples of `stride` plus the latest one, and doubling `stride` while the frames' total
/// `bytes` exceed `budget`. `stride` starts at 1 and only grows.
pub fn push_thinned<T>(
    frames: &mut Vec<T>,
    item: T,
    stride: &mut usize,
    budget: usize,
    step: impl Fn(&T) -> usize,
    bytes: impl Fn(&T) -> usize,
) {
    *stride = (*stride).max(1);
    // The previous latest frame stayed only because it was the latest.
    if frames.len() > 1
        && frames
            .last()
            .is_some_and(|f| !step(f).is_multiple_of(*stride))
    {
        frames.pop();
    }
    frames.push(item);
    while frames.len() > 2 && frames.iter().map(&bytes).sum::<usize>() > budget {
        *stride *= 2;
        let last = frames.len() - 1;
        let s = *stride;
        let mut i = 0;
        frames.retain(|f| {
            let keep = i == 0 || i == last || step(f).is_multiple_of(s);
            i += 1;
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: usize, budget: usize) -> (Vec<usize>, usize) {
        let (mut v, mut stride) = (Vec::new(), 1);
        for s in 0..=n {
            push_thinned(&mut v, s, &mut stride, budget, |&s| s, |_| 10);
        }
        (v, stride)
    }

    #[test]
    fn keeps_everything_under_the_budget() {
        let (v, stride) = run(50, 10_000);
        assert_eq!(v, (0..=50).collect::<Vec<_>>());
        assert_eq!(stride, 1);
    }

    #[test]
    fn thins_evenly_and_keeps_both_ends() {
        // 1001 frames of 10 bytes under 1000 bytes: at most 100 frames.
        let (v, stride) = run(1000, 1000);
        assert!(v.len() * 10 <= 1000, "{} frames", v.len());
        assert_eq!(stride, 16);
        assert_eq!((v[0], *v.last().unwrap()), (0, 1000));
        // Evenly spaced apart from the latest frame.
        assert!(
            v[..v.len() - 1].windows(2).all(|w| w[1] - w[0] == stride),
            "{v:?}"
        );
        // Mid-run, the latest frame is on screen even when it is off the stride.
        let (mut v, mut stride) = (Vec::new(), 1);
        for s in 0..=333 {
            push_thinned(&mut v, s, &mut stride, 1000, |&s| s, |_| 10);
            assert_eq!(*v.last().unwrap(), s);
            assert_eq!(v[0], 0);
        }
    }

    #[test]
    fn a_budget_below_two_frames_keeps_the_ends() {
        let (v, _) = run(20, 5);
        assert_eq!(v, vec![0, 20]);
    }
}
