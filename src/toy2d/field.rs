//! The vector field the particles move in at one timestep: ε̂(x, t), or x̂₀(x, t) − x (where the
//! model thinks a point at x came from), on a regular grid, for the page's arrows.

use super::EpsModel;

/// Which vector to draw at each grid point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// ε̂(x, t): the noise the model sees in x (points away from the data).
    Eps,
    /// x̂₀ − x = ((1 − √ᾱ) x − √(1−ᾱ) ε̂)/√ᾱ: towards the model's guess of the clean point.
    X0MinusX,
}

/// A regular grid of `nx × ny` points covering [min, max] (cell centres).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    pub min: [f32; 2],
    pub max: [f32; 2],
    pub nx: usize,
    pub ny: usize,
}

impl Grid {
    /// The points, row by row from `min`, flat N×2.
    pub fn points(&self) -> Vec<f32> {
        let (dx, dy) = (
            (self.max[0] - self.min[0]) / self.nx.max(1) as f32,
            (self.max[1] - self.min[1]) / self.ny.max(1) as f32,
        );
        (0..self.ny)
            .flat_map(|j| {
                (0..self.nx).flat_map(move |i| {
                    [
                        self.min[0] + (i as f32 + 0.5) * dx,
                        self.min[1] + (j as f32 + 0.5) * dy,
                    ]
                })
            })
            .collect()
    }
}

/// The vectors of `field` at the points of `grid` (flat N×2, in `grid.points()` order) at
/// timestep `t`, whose ᾱ is `alpha_bar` (the points are on the model's variance-preserving scale).
pub fn vector_field(
    model: &dyn EpsModel,
    field: Field,
    t: f32,
    alpha_bar: f32,
    grid: &Grid,
) -> Vec<f32> {
    let x = grid.points();
    let eps = model.eps(&x, t);
    match field {
        Field::Eps => eps,
        Field::X0MinusX => {
            let (sa, sn) = (alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt());
            x.iter()
                .zip(&eps)
                .map(|(&x, &e)| (x - sn * e) / sa - x)
                .collect()
        }
    }
}
