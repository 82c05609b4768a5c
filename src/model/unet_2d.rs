//! diffusers `UNet2DModel`, config-driven: time (and class) embedding, `conv_in`, down blocks,
//! mid block, up blocks with skip connections, `conv_norm_out` → SiLU → `conv_out`.

use crate::backend::{Backend, Conv2dParams, ConvEpilogue, Tensor};
use crate::error::{Error, Result};
use crate::model::blocks::{AttnConfig, BlockResample, DownBlock2D, UNetMidBlock2D, UpBlock2D};
use crate::model::config::UNet2DConfig;
use crate::model::embeddings::{TimeProj, TimestepEmbedding};
use crate::model::layers::{Conv2d, GroupNorm};
use crate::model::resnet::ResnetConfig;
use crate::model::weights::{WeightView, Weights};

/// How class labels enter the time embedding.
pub enum ClassEmbedding<B: Backend> {
    /// `nn.Embedding(num_class_embeds, time_embed_dim)`.
    Table {
        table: B::Tensor,
        num_classes: usize,
    },
    /// `class_embed_type="timestep"`: labels go through `time_proj` and their own MLP.
    Timestep(TimestepEmbedding<B>),
}

pub struct UNet2DModel<B: Backend> {
    pub config: UNet2DConfig,
    pub time_proj: TimeProj<B>,
    pub time_embedding: TimestepEmbedding<B>,
    pub class_embedding: Option<ClassEmbedding<B>>,
    pub conv_in: Conv2d<B>,
    pub down_blocks: Vec<DownBlock2D<B>>,
    pub mid_block: Option<UNetMidBlock2D<B>>,
    pub up_blocks: Vec<UpBlock2D<B>>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
    /// In the browser, the model's copies in the CPU backend's Web Workers, if it was shared
    /// with them ([`crate::model::workers::share`]); [`Self::forward_host`] splits batches among them.
    #[cfg(target_arch = "wasm32")]
    pub workers: Option<crate::model::workers::Share>,
}

/// A batch forward's split into `parts` forwards of consecutive images ([`UNet2DModel::batch_split`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchSplit {
    /// The whole input's shape, `[N, C, H, W]`.
    pub shape: [usize; 4],
    pub parts: usize,
    /// Values in one input image and in one output image.
    pub image: usize,
    pub out_image: usize,
}

impl BatchSplit {
    /// Part `i`'s images: `i·N/parts ..`, as even as the batch allows.
    pub fn range(&self, i: usize) -> std::ops::Range<usize> {
        let n = self.shape[0];
        i * n / self.parts..(i + 1) * n / self.parts
    }

    /// The input shape of the part holding images `r`.
    pub fn shape(&self, r: &std::ops::Range<usize>) -> [usize; 4] {
        let [_, c, h, w] = self.shape;
        [r.len(), c, h, w]
    }

    /// The timesteps (one for all, or the part's own) and class labels of images `r`.
    pub fn inputs<'a>(
        &self,
        r: &std::ops::Range<usize>,
        timesteps: &'a [f32],
        class_labels: Option<&'a [i64]>,
    ) -> (&'a [f32], Option<&'a [i64]>) {
        let t = if timesteps.len() == 1 {
            timesteps
        } else {
            &timesteps[r.clone()]
        };
        (t, class_labels.map(|l| &l[r.clone()]))
    }
}

impl<B: Backend> UNet2DModel<B> {
    /// Builds the model from its config and weights; every tensor of `weights` must be used.
    pub fn load(b: &B, config: UNet2DConfig, weights: &Weights) -> Result<Self> {
        config.validate()?;
        let cfg = &config;
        let vs = WeightView::root(weights);
        let ch = &cfg.block_out_channels;
        let n_blocks = ch.len();
        let time_embed_dim = cfg.time_embed_dim();
        let groups = cfg.resnet_groups()?;
        let resnet = ResnetConfig {
            temb_channels: Some(time_embed_dim),
            groups,
            eps: cfg.norm_eps,
            time_embedding_norm: cfg.time_scale_shift(),
            output_scale_factor: 1.0,
        };
        let head_dim = |channels: usize| cfg.attention_head_dim.unwrap_or(channels);
        let attn = |channels: usize, rescale: f32, norm_groups: Option<usize>| AttnConfig {
            head_dim: head_dim(channels),
            norm_groups,
            eps: cfg.norm_eps,
            rescale_output_factor: rescale,
        };

        // 1. time
        let time_proj = match cfg.time_embedding_type.as_str() {
            "learned" => {
                let steps = cfg.num_train_timesteps.unwrap_or(0);
                TimeProj::Learned {
                    table: b.upload(
                        &[steps, ch[0]],
                        &vs.pp("time_proj").get("weight", &[steps, ch[0]])?,
                    )?,
                }
            }
            _ => TimeProj::Positional {
                dim: ch[0],
                flip_sin_to_cos: cfg.flip_sin_to_cos,
                freq_shift: cfg.freq_shift,
            },
        };
        let time_embedding =
            TimestepEmbedding::load(b, &vs.pp("time_embedding"), ch[0], time_embed_dim)?;
        let class_embedding = match (cfg.class_embed_type.as_deref(), cfg.num_class_embeds) {
            (None, Some(k)) => Some(ClassEmbedding::Table {
                table: b.upload(
                    &[k, time_embed_dim],
                    &vs.pp("class_embedding")
                        .get("weight", &[k, time_embed_dim])?,
                )?,
                num_classes: k,
            }),
            (Some("timestep"), _) => Some(ClassEmbedding::Timestep(TimestepEmbedding::load(
                b,
                &vs.pp("class_embedding"),
                ch[0],
                time_embed_dim,
            )?)),
            _ => None,
        };

        // 2. pre-process
        let conv_in = Conv2d::load(
            b,
            &vs.pp("conv_in"),
            cfg.in_channels,
            ch[0],
            3,
            Conv2dParams::same(3),
        )?;

        // 3. down
        let mut down_blocks = Vec::new();
        let mut output_channel = ch[0];
        for (i, kind) in cfg.down_block_types.iter().enumerate() {
            let input_channel = output_channel;
            output_channel = ch[i];
            let has_attn = kind == "AttnDownBlock2D";
            // get_down_block: a ResnetDownsampleBlock2D downsamples with a resnet, an
            // AttnDownBlock2D as `downsample_type` says, a DownBlock2D with a conv.
            let resnet_down =
                kind == "ResnetDownsampleBlock2D" || (has_attn && cfg.downsample_type == "resnet");
            let downsample = (i + 1 != n_blocks).then_some(if resnet_down {
                BlockResample::Resnet
            } else {
                BlockResample::Conv {
                    padding: cfg.downsample_padding,
                }
            });
            down_blocks.push(DownBlock2D::load(
                b,
                &vs.pp("down_blocks").pp(i),
                input_channel,
                output_channel,
                cfg.layers_per_block,
                downsample,
                resnet,
                has_attn.then(|| attn(output_channel, 1.0, Some(groups))),
            )?);
        }

        // 4. mid
        let mid_block = match cfg.mid_block_type {
            None => None,
            Some(_) => {
                let c = ch[n_blocks - 1];
                let mid_groups = cfg.norm_num_groups.unwrap_or((c / 4).min(32));
                // diffusers: attn_groups defaults to resnet_groups only in `default` mode.
                let attn_groups = cfg.attn_norm_num_groups.or(match cfg.time_scale_shift() {
                    crate::model::config::TimeScaleShift::Default => Some(mid_groups),
                    _ => None,
                });
                let mid_resnet = ResnetConfig {
                    groups: mid_groups,
                    output_scale_factor: cfg.mid_block_scale_factor,
                    ..resnet
                };
                Some(UNetMidBlock2D::load(
                    b,
                    &vs.pp("mid_block"),
                    c,
                    mid_resnet,
                    cfg.add_attention
                        .then(|| attn(c, cfg.mid_block_scale_factor, attn_groups)),
                )?)
            }
        };

        // 5. up
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::new();
        let mut output_channel = rev[0];
        for (i, kind) in cfg.up_block_types.iter().enumerate() {
            let prev_output_channel = output_channel;
            output_channel = rev[i];
            let input_channel = rev[(i + 1).min(n_blocks - 1)];
            let has_attn = kind == "AttnUpBlock2D";
            let resnet_up =
                kind == "ResnetUpsampleBlock2D" || (has_attn && cfg.upsample_type == "resnet");
            let upsample = (i + 1 != n_blocks).then_some(if resnet_up {
                BlockResample::Resnet
            } else {
                BlockResample::Conv { padding: 1 }
            });
            up_blocks.push(UpBlock2D::load(
                b,
                &vs.pp("up_blocks").pp(i),
                input_channel,
                prev_output_channel,
                output_channel,
                cfg.layers_per_block + 1,
                upsample,
                resnet,
                has_attn.then(|| attn(output_channel, 1.0, Some(groups))),
            )?);
        }

        // 6. post-process
        let groups_out = cfg.norm_num_groups.unwrap_or((ch[0] / 4).min(32));
        let conv_norm_out =
            GroupNorm::load(b, &vs.pp("conv_norm_out"), groups_out, ch[0], cfg.norm_eps)?;
        let conv_out = Conv2d::load(
            b,
            &vs.pp("conv_out"),
            ch[0],
            cfg.out_channels,
            3,
            Conv2dParams::same(3),
        )?;

        weights.check_all_used()?;
        Ok(Self {
            config,
            time_proj,
            time_embedding,
            class_embedding,
            conv_in,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
            #[cfg(target_arch = "wasm32")]
            workers: None,
        })
    }

    /// The spatial size every down block must halve cleanly: `2^(blocks - 1)`.
    pub fn size_multiple(&self) -> usize {
        1 << (self.config.block_out_channels.len() - 1)
    }

    /// Checks a sample shape and its timestep/class inputs before anything reaches the backend.
    pub fn check_inputs(
        &self,
        shape: &[usize],
        timesteps: &[f32],
        class_labels: Option<&[i64]>,
    ) -> Result<()> {
        let &[n, c, h, w] = shape else {
            return Err(Error::input(
                "sample",
                format!("expected shape [N,C,H,W], got {shape:?}"),
            ));
        };
        if n == 0 || h == 0 || w == 0 {
            return Err(Error::input("sample", format!("empty shape {shape:?}")));
        }
        use crate::model::limits::{MAX_BATCH, MAX_SAMPLE_SIDE};
        // Classifier-free guidance runs 2N samples at once.
        if n > 2 * MAX_BATCH {
            return Err(Error::input(
                "sample",
                format!("a batch of {n} exceeds the limit of {MAX_BATCH} samples"),
            ));
        }
        if h > MAX_SAMPLE_SIDE || w > MAX_SAMPLE_SIDE {
            return Err(Error::input(
                "sample",
                format!("{h}×{w} exceeds the limit of {MAX_SAMPLE_SIDE} pixels per side"),
            ));
        }
        if c != self.config.in_channels {
            return Err(Error::input(
                "sample",
                format!(
                    "has {c} channels, the model's in_channels is {}",
                    self.config.in_channels
                ),
            ));
        }
        let m = self.size_multiple();
        if h % m != 0 || w % m != 0 {
            return Err(Error::input(
                "sample",
                format!(
                    "{h}×{w} is not divisible by {m} (the model downsamples {} times)",
                    m.trailing_zeros()
                ),
            ));
        }
        if timesteps.len() != n && timesteps.len() != 1 {
            return Err(Error::input(
                "timestep",
                format!(
                    "has {} values for a batch of {n} (expected {n} or 1)",
                    timesteps.len()
                ),
            ));
        }
        if let Some(bad) = timesteps.iter().find(|t| !t.is_finite()) {
            return Err(Error::input(
                "timestep",
                format!("value {bad} is not finite"),
            ));
        }
        if let TimeProj::Learned { table } = &self.time_proj {
            let steps = table.shape()[0];
            if let Some(bad) = timesteps
                .iter()
                .find(|&&t| !(t >= 0.0 && (t as usize) < steps && t.fract() == 0.0))
            {
                return Err(Error::input(
                    "timestep",
                    format!("{bad} is not an integer in 0..{steps} (learned time embedding)"),
                ));
            }
        }
        match (&self.class_embedding, class_labels) {
            (None, None) => {}
            (None, Some(_)) => {
                return Err(Error::input(
                    "class_labels",
                    "given, but the model has no class embedding (num_class_embeds is null)",
                ))
            }
            (Some(_), None) => {
                return Err(Error::input(
                    "class_labels",
                    "required: the model is class-conditional",
                ))
            }
            (Some(ce), Some(labels)) => {
                if labels.len() != n {
                    return Err(Error::input(
                        "class_labels",
                        format!("has {} values for a batch of {n}", labels.len()),
                    ));
                }
                if let ClassEmbedding::Table { num_classes, .. } = ce {
                    if let Some(bad) = labels
                        .iter()
                        .find(|&&l| l < 0 || l as usize >= *num_classes)
                    {
                        return Err(Error::input(
                            "class_labels",
                            format!("label {bad} is outside 0..{num_classes} (num_class_embeds = {num_classes})"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The UNet forward pass: `sample [N,C,H,W]`, one timestep per sample (or one for all),
    /// class labels for class-conditional models. Returns the model output (ε, v or x₀).
    pub fn forward(
        &self,
        b: &B,
        sample: &B::Tensor,
        timesteps: &[f32],
        class_labels: Option<&[i64]>,
    ) -> Result<B::Tensor> {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(y) = self.forward_on_threads(sample, timesteps, class_labels) {
            return y;
        }
        self.forward_probed(b, sample, timesteps, class_labels, &mut |_, _| {})
    }

    /// [`Self::forward`], read back to the host: what a sampler step needs. In the browser, a CPU
    /// forward of several images of a model shared with the CPU workers splits among them
    /// ([`crate::model::workers::forward`]), as natively [`Self::forward`] splits among threads.
    pub async fn forward_host(
        &self,
        b: &B,
        sample: &B::Tensor,
        timesteps: &[f32],
        class_labels: Option<&[i64]>,
    ) -> Result<Vec<f32>> {
        #[cfg(target_arch = "wasm32")]
        if let Some(y) = crate::model::workers::forward(self, sample, timesteps, class_labels).await
        {
            return y;
        }
        b.download(&self.forward(b, sample, timesteps, class_labels)?)
            .await
    }

    /// How a forward of `shape` splits into at most `shares` forwards of parts of the batch, run
    /// side by side (natively on threads, in the browser on Web Workers); `None` where it does
    /// not (one image, one share, or inputs that [`Self::check_inputs`] rejects, whose error the
    /// plain forward then gives).
    pub(crate) fn batch_split(
        &self,
        shape: &[usize],
        timesteps: &[f32],
        class_labels: Option<&[i64]>,
        shares: usize,
    ) -> Option<BatchSplit> {
        let &[n, c, h, w] = shape else {
            return None;
        };
        let parts = shares.min(n);
        if parts < 2 || self.check_inputs(shape, timesteps, class_labels).is_err() {
            return None;
        }
        Some(BatchSplit {
            shape: [n, c, h, w],
            parts,
            image: c * h * w,
            out_image: self.config.out_channels * h * w,
        })
    }

    /// On the CPU backend with several threads (natively): the batch in as many parts as there
    /// are threads (at most one per image), one whole forward per part, side by side. A part's
    /// ops then need no thread but their own, where splitting each op would make the threads meet
    /// once per op. `None` where this does not apply (another backend, one image, one thread, or
    /// inputs that [`Self::check_inputs`] rejects, whose error the plain forward then gives).
    #[cfg(not(target_arch = "wasm32"))]
    fn forward_on_threads(
        &self,
        sample: &B::Tensor,
        timesteps: &[f32],
        class_labels: Option<&[i64]>,
    ) -> Option<Result<B::Tensor>> {
        use crate::cpu::{threads, CpuBackend, CpuTensor};
        use std::any::Any;
        // Only the CPU backend's tensors can be read on any thread.
        let model = (self as &dyn Any).downcast_ref::<UNet2DModel<CpuBackend>>()?;
        let x = (sample as &dyn Any).downcast_ref::<CpuTensor>()?;
        let split = self.batch_split(x.shape(), timesteps, class_labels, threads::count())?;
        let run = |r: &std::ops::Range<usize>, out: &mut [f32]| -> Result<()> {
            // Made and dropped on this thread, so that its buffers stay in this thread's pool.
            let xs = CpuTensor::compute(&split.shape(r), |v| {
                v.copy_from_slice(&x.data()[r.start * split.image..r.end * split.image])
            });
            let (t, labels) = split.inputs(r, timesteps, class_labels);
            let ys = threads::alone(|| {
                model.forward_probed(&CpuBackend, &xs, t, labels, &mut |_, _| {})
            })?;
            if ys.data().len() != out.len() {
                return Err(Error::shape(
                    "UNet2DModel",
                    format!("a part's output {:?} does not fit its images", ys.shape()),
                ));
            }
            out.copy_from_slice(ys.data());
            Ok(())
        };
        let mut done = Ok(());
        let [n, _, h, w] = split.shape;
        let y = CpuTensor::compute(&[n, self.config.out_channels, h, w], |out| {
            let mut jobs = Vec::with_capacity(split.parts);
            let mut rest = out;
            for i in 0..split.parts {
                let r = split.range(i);
                let (head, tail) =
                    std::mem::take(&mut rest).split_at_mut(r.len() * split.out_image);
                jobs.push((r, head, Ok(())));
                rest = tail;
            }
            threads::for_each(&mut jobs, |(r, out, done)| *done = run(r, out));
            done = jobs.into_iter().try_for_each(|(.., d)| d);
        });
        let y: Box<dyn Any> = Box::new(y);
        Some(done.map(|_| *y.downcast::<B::Tensor>().expect("B is CpuBackend")))
    }

    /// [`Self::forward`], handing every stage's output to `probe` with the stage's diffusers
    /// name (`conv_in`, `down_blocks.1`, `mid_block`, …) as it is computed.
    pub fn forward_probed(
        &self,
        b: &B,
        sample: &B::Tensor,
        timesteps: &[f32],
        class_labels: Option<&[i64]>,
        probe: &mut dyn FnMut(&str, &B::Tensor),
    ) -> Result<B::Tensor> {
        self.check_inputs(sample.shape(), timesteps, class_labels)?;
        let n = sample.shape()[0];

        // 0. center input if necessary
        let sample = if self.config.center_input_sample {
            b.affine(sample, 2.0, -1.0)?
        } else {
            sample.clone()
        };

        // 1. time (broadcast to the batch as diffusers does)
        let t: Vec<f32> = if timesteps.len() == 1 {
            vec![timesteps[0]; n]
        } else {
            timesteps.to_vec()
        };
        let t = b.upload(&[n], &t)?;
        let t_emb = self.time_proj.forward(b, &t)?;
        let mut emb = self.time_embedding.forward(b, &t_emb)?;
        probe("time_embedding", &emb);
        if let (Some(ce), Some(labels)) = (&self.class_embedding, class_labels) {
            let ids: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
            let ids = b.upload(&[n], &ids)?;
            let class_emb = match ce {
                ClassEmbedding::Table { table, .. } => b.embedding(table, &ids)?,
                ClassEmbedding::Timestep(mlp) => {
                    mlp.forward(b, &self.time_proj.forward(b, &ids)?)?
                }
            };
            probe("class_embedding", &class_emb);
            emb = b.add(&emb, &class_emb, 1.0)?;
        }
        // Every resnet starts with `time_emb_proj(silu(emb))`: apply the SiLU once.
        let temb = b.silu(&emb)?;

        // 2. pre-process
        let mut h = self.conv_in.forward(b, &sample)?;
        probe("conv_in", &h);

        // 3. down
        let mut skips = vec![h.clone()];
        for (i, block) in self.down_blocks.iter().enumerate() {
            let (out, states) = block.forward(b, &h, Some(&temb))?;
            h = out;
            probe(&format!("down_blocks.{i}"), &h);
            skips.extend(states);
        }

        // 4. mid
        if let Some(mid) = &self.mid_block {
            h = mid.forward(b, &h, Some(&temb))?;
            probe("mid_block", &h);
        }

        // 5. up
        for (i, block) in self.up_blocks.iter().enumerate() {
            h = block.forward(b, &h, &mut skips, &temb)?;
            probe(&format!("up_blocks.{i}"), &h);
        }

        // 6. post-process
        // `conv_out(silu(conv_norm_out(h)))`, the norm fused into the convolution's input.
        let out =
            self.conv_out
                .forward_normed(b, &h, &self.conv_norm_out, true, ConvEpilogue::none())?;
        probe("conv_out", &out);
        Ok(out)
    }

    /// Re-runs a forward pass keeping every stage's output and names the first stage whose output
    /// holds a NaN or infinity (`None` if the whole pass is finite): the numerical guard's way to
    /// say where a step went wrong, paid only once a step has produced non-finite values.
    pub async fn first_non_finite_stage(
        &self,
        b: &B,
        sample: &B::Tensor,
        timesteps: &[f32],
        class_labels: Option<&[i64]>,
    ) -> Result<Option<String>> {
        if b.download(sample).await?.iter().any(|v| !v.is_finite()) {
            return Ok(Some("the model's input".into()));
        }
        let mut stages: Vec<(String, B::Tensor)> = Vec::new();
        self.forward_probed(b, sample, timesteps, class_labels, &mut |name, t| {
            stages.push((name.to_string(), t.clone()))
        })?;
        for (name, t) in stages {
            if b.download(&t).await?.iter().any(|v| !v.is_finite()) {
                return Ok(Some(name));
            }
        }
        Ok(None)
    }
}
