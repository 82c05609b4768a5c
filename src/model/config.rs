//! `UNet2DModel`'s `config.json`, parsed with serde: every field missing from the file takes
//! diffusers' own default for `UNet2DModel` (not what popular checkpoints happen to use).

use serde::Deserialize;

use crate::error::{Error, Result};

fn default_in_channels() -> usize {
    3
}
fn default_time_embedding_type() -> String {
    "positional".into()
}
fn default_true() -> bool {
    true
}
fn default_down_block_types() -> Vec<String> {
    [
        "DownBlock2D",
        "AttnDownBlock2D",
        "AttnDownBlock2D",
        "AttnDownBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn default_mid_block_type() -> Option<String> {
    Some("UNetMidBlock2D".into())
}
fn default_up_block_types() -> Vec<String> {
    [
        "AttnUpBlock2D",
        "AttnUpBlock2D",
        "AttnUpBlock2D",
        "UpBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn default_block_out_channels() -> Vec<usize> {
    vec![224, 448, 672, 896]
}
fn default_layers_per_block() -> usize {
    2
}
fn default_one() -> f32 {
    1.0
}
fn default_downsample_padding() -> usize {
    1
}
fn default_conv() -> String {
    "conv".into()
}
fn default_act_fn() -> String {
    "silu".into()
}
fn default_attention_head_dim() -> Option<usize> {
    Some(8)
}
fn default_norm_num_groups() -> Option<usize> {
    Some(32)
}
fn default_norm_eps() -> f32 {
    1e-5
}
fn default_time_scale_shift() -> String {
    "default".into()
}

/// The fields of diffusers' `UNet2DModel.__init__`, with its defaults. `null` in the file and a
/// missing field differ where diffusers' do (e.g. `attention_head_dim: null` means one head).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct UNet2DConfig {
    /// The diffusers class that wrote the file; only `UNet2DModel` (or none) is accepted.
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<serde_json::Value>,
    #[serde(default)]
    pub sample_size: Option<SampleSize>,
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    #[serde(default = "default_in_channels")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "default_time_embedding_type")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default)]
    pub freq_shift: f32,
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default = "default_down_block_types")]
    pub down_block_types: Vec<String>,
    #[serde(default = "default_mid_block_type")]
    pub mid_block_type: Option<String>,
    #[serde(default = "default_up_block_types")]
    pub up_block_types: Vec<String>,
    #[serde(default = "default_block_out_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_layers_per_block")]
    pub layers_per_block: usize,
    #[serde(default = "default_one")]
    pub mid_block_scale_factor: f32,
    #[serde(default = "default_downsample_padding")]
    pub downsample_padding: usize,
    #[serde(default = "default_conv")]
    pub downsample_type: String,
    #[serde(default = "default_conv")]
    pub upsample_type: String,
    #[serde(default)]
    pub dropout: f32,
    #[serde(default = "default_act_fn")]
    pub act_fn: String,
    #[serde(default = "default_attention_head_dim")]
    pub attention_head_dim: Option<usize>,
    #[serde(default = "default_norm_num_groups")]
    pub norm_num_groups: Option<usize>,
    #[serde(default)]
    pub attn_norm_num_groups: Option<usize>,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f32,
    #[serde(default = "default_time_scale_shift")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "default_true")]
    pub add_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    #[serde(default)]
    pub num_train_timesteps: Option<usize>,
}

/// `sample_size` is an int or `[height, width]`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum SampleSize {
    Square(usize),
    Rect([usize; 2]),
}

impl SampleSize {
    pub fn hw(self) -> (usize, usize) {
        match self {
            SampleSize::Square(s) => (s, s),
            SampleSize::Rect([h, w]) => (h, w),
        }
    }
}

impl Default for UNet2DConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("an empty object is a valid config")
    }
}

/// How a ResnetBlock2D injects the time embedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeScaleShift {
    Default,
    ScaleShift,
}

impl UNet2DConfig {
    pub fn from_json(text: &str, path: &str) -> Result<Self> {
        let cfg: Self = serde_json::from_str(text).map_err(|e| Error::Json {
            path: path.into(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// `time_embedding_dim or block_out_channels[0] * 4`.
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or(self.block_out_channels[0] * 4)
    }

    pub fn time_scale_shift(&self) -> TimeScaleShift {
        match self.resnet_time_scale_shift.as_str() {
            "scale_shift" => TimeScaleShift::ScaleShift,
            _ => TimeScaleShift::Default,
        }
    }

    /// Groups of the resnets' norms (diffusers passes `norm_num_groups` straight through).
    pub fn resnet_groups(&self) -> Result<usize> {
        self.norm_num_groups.ok_or_else(|| {
            Error::config(
                "norm_num_groups",
                "null is only supported by diffusers for the mid block and output norm",
            )
        })
    }

    /// Checks everything the engine relies on, naming the field at fault.
    pub fn validate(&self) -> Result<()> {
        use crate::model::limits::{self, at_most};
        if let Some(class) = &self.class_name {
            if class.as_str() != Some("UNet2DModel") {
                let class = class
                    .as_str()
                    .map_or_else(|| class.to_string(), String::from);
                return Err(Error::unsupported(
                    "model class in the UNet's config.json `_class_name`",
                    class,
                    "UNet2DModel (text- or image-conditioned UNets such as UNet2DConditionModel \
                     need inputs this engine does not have)",
                ));
            }
        }
        limits::check_blocks(
            "block_out_channels",
            &self.block_out_channels,
            self.layers_per_block,
        )?;
        at_most("in_channels", self.in_channels, limits::MAX_CHANNELS)?;
        at_most("out_channels", self.out_channels, limits::MAX_CHANNELS)?;
        if let Some(s) = self.sample_size {
            let (h, w) = s.hw();
            at_most("sample_size", h.max(w), limits::MAX_SAMPLE_SIDE)?;
        }
        if let Some(k) = self.num_class_embeds {
            at_most("num_class_embeds", k, limits::MAX_CLASSES)?;
        }
        if let Some(t) = self.num_train_timesteps {
            at_most("num_train_timesteps", t, limits::MAX_TRAIN_TIMESTEPS)?;
        }
        if let Some(d) = self.time_embedding_dim {
            at_most("time_embedding_dim", d, 4 * limits::MAX_CHANNELS)?;
        }
        let n = self.block_out_channels.len();
        if n == 0 || self.block_out_channels.contains(&0) {
            return Err(Error::config(
                "block_out_channels",
                format!(
                    "must be non-empty and positive, got {:?}",
                    self.block_out_channels
                ),
            ));
        }
        if self.down_block_types.len() != n {
            return Err(Error::config(
                "down_block_types",
                format!(
                    "{} entries but block_out_channels has {n} (diffusers requires the same number)",
                    self.down_block_types.len()
                ),
            ));
        }
        if self.up_block_types.len() != n {
            return Err(Error::config(
                "up_block_types",
                format!(
                    "{} entries but down_block_types has {n} (diffusers requires the same number)",
                    self.up_block_types.len()
                ),
            ));
        }
        for t in &self.down_block_types {
            if !matches!(
                t.as_str(),
                "DownBlock2D" | "AttnDownBlock2D" | "ResnetDownsampleBlock2D"
            ) {
                return Err(Error::unsupported(
                    "down block type in `down_block_types`",
                    t,
                    "DownBlock2D, AttnDownBlock2D, ResnetDownsampleBlock2D",
                ));
            }
        }
        for t in &self.up_block_types {
            if !matches!(
                t.as_str(),
                "UpBlock2D" | "AttnUpBlock2D" | "ResnetUpsampleBlock2D"
            ) {
                return Err(Error::unsupported(
                    "up block type in `up_block_types`",
                    t,
                    "UpBlock2D, AttnUpBlock2D, ResnetUpsampleBlock2D",
                ));
            }
        }
        if let Some(m) = &self.mid_block_type {
            if m != "UNetMidBlock2D" {
                return Err(Error::unsupported(
                    "`mid_block_type`",
                    m,
                    "UNetMidBlock2D or null",
                ));
            }
        }
        if self.in_channels == 0 || self.out_channels == 0 || self.layers_per_block == 0 {
            return Err(Error::config(
                "in_channels/out_channels/layers_per_block",
                "must be positive",
            ));
        }
        if !matches!(self.time_embedding_type.as_str(), "positional" | "learned") {
            return Err(Error::unsupported(
                "`time_embedding_type`",
                &self.time_embedding_type,
                "positional, learned",
            ));
        }
        // Timesteps(block_out_channels[0], ...): frequency i is exp(−ln(10⁴)·i / (half − freq_shift)),
        // so half = freq_shift makes the first one 0/0 and every output NaN (in diffusers too).
        let half = self.block_out_channels[0] / 2;
        if self.time_embedding_type == "positional" && half > 0 && half as f32 == self.freq_shift {
            return Err(Error::config(
                "freq_shift",
                format!(
                    "{} with block_out_channels[0] = {}: the sinusoidal time embedding divides by \
                     block_out_channels[0] / 2 − freq_shift = 0, which makes every output NaN",
                    self.freq_shift, self.block_out_channels[0]
                ),
            ));
        }
        if self.time_embedding_type == "learned" && self.num_train_timesteps.is_none() {
            return Err(Error::config(
                "num_train_timesteps",
                "required when time_embedding_type is \"learned\"",
            ));
        }
        if self.act_fn != "silu" && self.act_fn != "swish" {
            return Err(Error::unsupported("`act_fn`", &self.act_fn, "silu (swish)"));
        }
        if !matches!(
            self.resnet_time_scale_shift.as_str(),
            "default" | "scale_shift"
        ) {
            return Err(Error::unsupported(
                "`resnet_time_scale_shift`",
                &self.resnet_time_scale_shift,
                "default, scale_shift",
            ));
        }
        if !matches!(self.downsample_type.as_str(), "conv" | "resnet") {
            return Err(Error::unsupported(
                "`downsample_type`",
                &self.downsample_type,
                "conv, resnet",
            ));
        }
        if !matches!(self.upsample_type.as_str(), "conv" | "resnet") {
            return Err(Error::unsupported(
                "`upsample_type`",
                &self.upsample_type,
                "conv, resnet",
            ));
        }
        if self.downsample_padding > 1 {
            return Err(Error::unsupported(
                "`downsample_padding`",
                self.downsample_padding.to_string(),
                "0, 1",
            ));
        }
        match (self.class_embed_type.as_deref(), self.num_class_embeds) {
            (None, _) | (Some("timestep"), _) => {}
            (Some(other), _) => {
                return Err(Error::unsupported(
                    "`class_embed_type`",
                    other,
                    "null, timestep",
                ))
            }
        }
        if self.num_class_embeds == Some(0) {
            return Err(Error::config("num_class_embeds", "must be positive"));
        }
        if let Some(0) = self.attention_head_dim {
            return Err(Error::config(
                "attention_head_dim",
                "must be positive or null",
            ));
        }
        if self.norm_num_groups == Some(0) || self.attn_norm_num_groups == Some(0) {
            return Err(Error::config("norm_num_groups", "must be positive"));
        }
        if self.norm_eps.is_nan() || self.norm_eps <= 0.0 {
            return Err(Error::config(
                "norm_eps",
                format!("must be positive, got {}", self.norm_eps),
            ));
        }
        Ok(())
    }

    /// Whether the model takes class labels.
    pub fn is_class_conditional(&self) -> bool {
        self.num_class_embeds.is_some() || self.class_embed_type.is_some()
    }
}
