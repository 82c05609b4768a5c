//! Paths through sample space seen from above: the two principal directions of a set of points
//! (the x_t and x̂0 of several runs from one noise), so that each run's path can be drawn as a 2D
//! line. A 28×28 image is a point in 784 dimensions; most of a run's motion lies in a few of
//! them, which PCA finds.
//!
//! Power iteration on the covariance, applied as Xᵀ(X v) without forming it: with m points of
//! dimension d that is O(m·d) a round, where the d×d covariance of a 64×64 RGB image would hold
//! 150 M numbers.

/// Two principal directions and the centre of the points they were fitted to.
#[derive(Clone, Debug, PartialEq)]
pub struct Projection {
    pub mean: Vec<f32>,
    /// Unit vectors, orthogonal, by decreasing variance.
    pub axes: [Vec<f32>; 2],
    /// The fraction of the points' total variance along each axis.
    pub explained: [f64; 2],
}

impl Projection {
    /// Coordinates of `x` on the two axes.
    pub fn apply(&self, x: &[f32]) -> [f64; 2] {
        let dot = |a: &[f32]| -> f64 {
            x.iter()
                .zip(&self.mean)
                .zip(a)
                .map(|((&v, &m), &u)| f64::from(v - m) * f64::from(u))
                .sum()
        };
        [dot(&self.axes[0]), dot(&self.axes[1])]
    }
}

const ROUNDS: usize = 60;

/// The two leading principal directions of `points` (all of one length), or `None` for fewer than
/// three points or points that do not span two directions.
pub fn project(points: &[&[f32]]) -> Option<Projection> {
    let m = points.len();
    let d = points.first()?.len();
    if m < 3 || d < 2 || points.iter().any(|p| p.len() != d) {
        return None;
    }
    let mut mean = vec![0f64; d];
    for p in points {
        for (a, &v) in mean.iter_mut().zip(*p) {
            *a += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|a| *a /= m as f64);
    let centred: Vec<Vec<f64>> = points
        .iter()
        .map(|p| {
            p.iter()
                .zip(&mean)
                .map(|(&v, &a)| f64::from(v) - a)
                .collect()
        })
        .collect();
    let total: f64 = centred
        .iter()
        .map(|r| r.iter().map(|v| v * v).sum::<f64>())
        .sum::<f64>()
        / m as f64;
    if total <= 0.0 {
        return None;
    }
    // Cov·v = Xᵀ(X v) / m.
    let cov_times = |v: &[f64]| -> Vec<f64> {
        let mut out = vec![0f64; d];
        for r in &centred {
            let s: f64 = r.iter().zip(v).map(|(a, b)| a * b).sum();
            for (o, a) in out.iter_mut().zip(r) {
                *o += s * a;
            }
        }
        out.iter_mut().for_each(|o| *o /= m as f64);
        out
    };
    let normalize = |v: &mut [f64]| -> f64 {
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if n > 0.0 {
            v.iter_mut().for_each(|x| *x /= n);
        }
        n
    };
    let orthogonalize = |v: &mut [f64], u: &[f64]| {
        let s: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
        v.iter_mut().zip(u).for_each(|(a, b)| *a -= s * b);
    };
    let mut axes: Vec<Vec<f64>> = Vec::new();
    let mut explained = [0f64; 2];
    for k in 0..2 {
        // A fixed start that no direction is orthogonal to by accident: the points' own spread
        // (the first centred point plus a deterministic wobble).
        let mut v: Vec<f64> = (0..d)
            .map(|i| centred[k % m][i] + ((i as f64 * 0.618_033_988_7).fract() - 0.5) * 1e-3)
            .collect();
        for u in &axes {
            orthogonalize(&mut v, u);
        }
        normalize(&mut v);
        let mut lambda = 0.0;
        for _ in 0..ROUNDS {
            let mut w = cov_times(&v);
            for u in &axes {
                orthogonalize(&mut w, u);
            }
            lambda = normalize(&mut w);
            if lambda == 0.0 {
                return None;
            }
            v = w;
        }
        explained[k] = lambda / total;
        axes.push(v);
    }
    let to32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    Some(Projection {
        mean: to32(&mean),
        axes: [to32(&axes[0]), to32(&axes[1])],
        explained,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_plane_of_points_in_a_plane() {
        // Points a·e1 + b·e2 in 50 dimensions, with a much wider spread along e1, plus a little
        // noise along the others.
        let d = 50;
        let e1: Vec<f32> = (0..d).map(|i| ((i as f32) * 0.3).sin()).collect();
        let n1 = e1.iter().map(|x| x * x).sum::<f32>().sqrt();
        let e1: Vec<f32> = e1.iter().map(|x| x / n1).collect();
        let mut e2: Vec<f32> = (0..d).map(|i| ((i as f32) * 0.7).cos()).collect();
        let s: f32 = e2.iter().zip(&e1).map(|(a, b)| a * b).sum();
        e2.iter_mut().zip(&e1).for_each(|(a, b)| *a -= s * b);
        let n2 = e2.iter().map(|x| x * x).sum::<f32>().sqrt();
        e2.iter_mut().for_each(|x| *x /= n2);
        let noise = crate::noise::randn(3, 0, 200 * d);
        let pts: Vec<Vec<f32>> = (0..200)
            .map(|k| {
                let (a, b) = ((k as f32 * 0.37).sin() * 5.0, (k as f32 * 1.3).cos() * 2.0);
                (0..d)
                    .map(|i| a * e1[i] + b * e2[i] + 0.01 * noise[k * d + i] + 1.0)
                    .collect()
            })
            .collect();
        let refs: Vec<&[f32]> = pts.iter().map(Vec::as_slice).collect();
        let p = project(&refs).unwrap();
        let cos = |u: &[f32], v: &[f32]| u.iter().zip(v).map(|(a, b)| a * b).sum::<f32>().abs();
        assert!(cos(&p.axes[0], &e1) > 0.999, "{}", cos(&p.axes[0], &e1));
        assert!(cos(&p.axes[1], &e2) > 0.999, "{}", cos(&p.axes[1], &e2));
        assert!(p.explained[0] > p.explained[1] && p.explained[0] + p.explained[1] > 0.99);
        // The projection reproduces the in-plane coordinates up to sign.
        let xy = p.apply(&pts[5]);
        let a = (5.0f32 * 0.37).sin() * 5.0;
        let mean_a: f32 = (0..200).map(|k| (k as f32 * 0.37).sin() * 5.0).sum::<f32>() / 200.0;
        assert!(
            (xy[0].abs() - f64::from((a - mean_a).abs())).abs() < 0.05,
            "{xy:?}"
        );
        assert!(project(&refs[..2]).is_none());
    }
}
