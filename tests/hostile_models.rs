//! Broken and hostile model folders and inputs: each must fail with an error that names the
//! problem (field, full tensor key, shapes), never a panic or a hang.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use stepwise::cpu::CpuBackend;
use stepwise::model::loader::{load_unet_files, DirSource};
use stepwise::model::UNet2DModel;
use stepwise::{Backend, Error};

const BASE: &str = "tests/fixtures/unet/attn_multihead";
const WEIGHTS: &str = "diffusion_pytorch_model.safetensors";

/// A scratch copy of the base fixture that a test can break.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stepwise-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join(BASE);
    for f in ["config.json", WEIGHTS] {
        std::fs::copy(base.join(f), dir.join(f)).unwrap();
    }
    dir
}

fn load(dir: &Path) -> Result<(), Error> {
    let files = load_unet_files(&DirSource(dir.to_path_buf()))?;
    UNet2DModel::load(&CpuBackend, files.config, &files.weights).map(|_| ())
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(p, v.to_string()).unwrap();
}

/// Rewrites the weights: `f` gets (name → (dtype, shape, bytes)) to edit.
fn edit_weights(dir: &Path, f: impl FnOnce(&mut HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>)) {
    let p = dir.join(WEIGHTS);
    let bytes = std::fs::read(&p).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut map: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    f(&mut map);
    let views: Vec<(String, TensorView)> = map
        .iter()
        .map(|(k, (d, s, b))| (k.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(p, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn err_of(dir: &Path) -> String {
    match load(dir) {
        Ok(()) => panic!("{} loaded, expected an error", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn truncated_safetensors() {
    let dir = scratch("truncated");
    let p = dir.join(WEIGHTS);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = err_of(&dir);
    assert!(
        e.contains(WEIGHTS) && e.contains("not a valid .safetensors"),
        "{e}"
    );
}

#[test]
fn hostile_header_length() {
    let dir = scratch("header");
    let mut bytes = u64::MAX.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(dir.join(WEIGHTS), bytes).unwrap();
    let e = err_of(&dir);
    assert!(e.contains("not a valid .safetensors"), "{e}");
}

#[test]
fn header_with_offsets_past_the_end() {
    let dir = scratch("offsets");
    let header =
        br#"{"conv_in.weight":{"dtype":"F32","shape":[1000000],"data_offsets":[0,4000000]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 64]);
    std::fs::write(dir.join(WEIGHTS), bytes).unwrap();
    let e = err_of(&dir);
    assert!(e.contains("not a valid .safetensors"), "{e}");
}

#[test]
fn unknown_block_type() {
    let dir = scratch("block");
    edit_config(&dir, |v| {
        v["down_block_types"][1] = "CrossAttnDownBlock2D".into()
    });
    let e = err_of(&dir);
    assert!(
        e.contains("CrossAttnDownBlock2D") && e.contains("down_block_types"),
        "{e}"
    );
}

#[test]
fn inconsistent_block_counts() {
    let dir = scratch("counts");
    edit_config(&dir, |v| {
        v["up_block_types"] = serde_json::json!(["UpBlock2D"])
    });
    let e = err_of(&dir);
    assert!(
        e.contains("up_block_types") && e.contains("1 entries"),
        "{e}"
    );
}

#[test]
fn config_field_of_wrong_type() {
    let dir = scratch("type");
    edit_config(&dir, |v| v["block_out_channels"] = "wide".into());
    let e = err_of(&dir);
    assert!(e.contains("config.json") && e.contains("invalid"), "{e}");
}

/// A pipeline folder around the base UNet with this `model_index.json`.
fn pipeline_with_index(name: &str, index: serde_json::Value) -> PathBuf {
    let unet = scratch(name);
    let dir = unet.with_file_name(format!(
        "{}-pipeline",
        unet.file_name().unwrap().to_string_lossy()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::rename(&unet, dir.join("unet")).unwrap();
    std::fs::write(dir.join("model_index.json"), index.to_string()).unwrap();
    dir
}

#[test]
fn pipeline_components_the_engine_cannot_run_are_named() {
    // CompVis/ldm-celebahq-256: a UNet2DModel whose samples are VQ-VAE latents. Run as a pixel
    // model it would draw latents as if they were the image.
    let dir = pipeline_with_index(
        "vqvae",
        serde_json::json!({"_class_name": "LDMPipeline", "unet": ["diffusers", "UNet2DModel"],
            "scheduler": ["diffusers", "DDIMScheduler"], "vqvae": ["diffusers", "VQModel"]}),
    );
    let e = err_of(&dir);
    assert!(
        e.contains("vqvae: VQModel") && e.contains("model_index.json"),
        "{e}"
    );

    let dir = pipeline_with_index(
        "tiny-vae",
        serde_json::json!({"unet": ["diffusers", "UNet2DModel"], "vae": ["diffusers", "AutoencoderTiny"]}),
    );
    let e = err_of(&dir);
    assert!(
        e.contains("AutoencoderTiny") && e.contains("AutoencoderKL"),
        "{e}"
    );

    // Optional components diffusers saved as absent ([null, null]) are fine.
    let dir = pipeline_with_index(
        "optional",
        serde_json::json!({"_class_name": ["custom", "Pipe"], "unet": ["diffusers", "UNet2DModel"],
            "scheduler": ["diffusers", "PNDMScheduler"], "safety_checker": [null, null]}),
    );
    load(&dir).unwrap();

    let dir = pipeline_with_index("garbled", serde_json::json!({"unet": "UNet2DModel"}));
    let e = err_of(&dir);
    assert!(
        e.contains("component `unet`") && e.contains("[library, class]"),
        "{e}"
    );
}

#[test]
fn a_text_conditioned_unet_is_named() {
    let dir = scratch("conditional");
    edit_config(&dir, |v| v["_class_name"] = "UNet2DConditionModel".into());
    let e = err_of(&dir);
    assert!(
        e.contains("UNet2DConditionModel") && e.contains("UNet2DModel"),
        "{e}"
    );
}

#[test]
fn time_embedding_that_divides_by_zero() {
    // block_out_channels[0] = 16: half = 8, and freq_shift 8 makes diffusers' first frequency 0/0.
    let dir = scratch("freq_shift");
    edit_config(&dir, |v| v["freq_shift"] = 8.into());
    let e = err_of(&dir);
    assert!(
        e.contains("freq_shift") && e.contains("= 0") && e.contains("NaN"),
        "{e}"
    );
}

#[test]
fn groups_that_do_not_divide_channels() {
    let dir = scratch("groups");
    edit_config(&dir, |v| v["norm_num_groups"] = 5.into());
    let e = err_of(&dir);
    assert!(
        e.contains("num_groups (5) must divide num_channels (16)"),
        "{e}"
    );
}

#[test]
fn missing_tensor_names_key_and_shape() {
    let dir = scratch("missing");
    edit_weights(&dir, |m| {
        m.remove("down_blocks.1.attentions.0.to_k.weight");
    });
    let e = err_of(&dir);
    assert!(
        e.contains("missing tensor `down_blocks.1.attentions.0.to_k.weight`")
            && e.contains("[32, 32]"),
        "{e}"
    );
}

#[test]
fn extra_tensor_is_reported() {
    let dir = scratch("extra");
    edit_weights(&dir, |m| {
        m.insert(
            "mid_block.resnets.7.conv1.weight".into(),
            (Dtype::F32, vec![2], vec![0; 8]),
        );
    });
    let e = err_of(&dir);
    assert!(e.contains("mid_block.resnets.7.conv1.weight"), "{e}");
}

#[test]
fn wrong_shape_names_key_and_both_shapes() {
    let dir = scratch("shape");
    edit_weights(&dir, |m| {
        m.insert(
            "conv_in.weight".into(),
            (Dtype::F32, vec![16, 3, 1, 1], vec![0; 16 * 3 * 4]),
        );
    });
    let e = err_of(&dir);
    assert!(
        e.contains("conv_in.weight") && e.contains("[16, 3, 1, 1]") && e.contains("[16, 3, 3, 3]"),
        "{e}"
    );
}

#[test]
fn unsupported_dtype() {
    let dir = scratch("dtype");
    edit_weights(&dir, |m| {
        m.insert("conv_in.bias".into(), (Dtype::I32, vec![16], vec![0; 64]));
    });
    let e = err_of(&dir);
    assert!(e.contains("conv_in.bias") && e.contains("I32"), "{e}");
}

#[test]
fn non_finite_weights() {
    let dir = scratch("nan");
    edit_weights(&dir, |m| {
        m.insert(
            "conv_out.bias".into(),
            (
                Dtype::F32,
                vec![3],
                [f32::NAN; 3].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
        );
    });
    let e = err_of(&dir);
    assert!(
        e.contains("conv_out.bias") && e.contains("non-finite"),
        "{e}"
    );
}

#[test]
fn not_a_model_folder() {
    let dir = std::env::temp_dir().join(format!("stepwise-hostile-{}-empty", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = err_of(&dir);
    assert!(e.contains("config.json") && e.contains("diffusers"), "{e}");
}

#[test]
fn bad_inputs_are_named() {
    let dir = scratch("inputs");
    let files = load_unet_files(&DirSource(dir)).unwrap();
    let unet = UNet2DModel::load(&CpuBackend, files.config, &files.weights).unwrap();
    let x = CpuBackend.upload(&[1, 4, 16, 16], &[0.0; 1024]).unwrap();
    let e = unet
        .forward(&CpuBackend, &x, &[1.0], None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("4 channels") && e.contains("in_channels is 3"),
        "{e}"
    );
    let x = CpuBackend.upload(&[1, 3, 9, 9], &[0.0; 243]).unwrap();
    let e = unet
        .forward(&CpuBackend, &x, &[1.0], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not divisible by 2"), "{e}");
    let x = CpuBackend.upload(&[2, 3, 16, 16], &[0.0; 1536]).unwrap();
    let e = unet
        .forward(&CpuBackend, &x, &[1.0, 2.0, 3.0], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("timestep") && e.contains("3 values"), "{e}");
    let e = unet
        .forward(&CpuBackend, &x, &[1.0], Some(&[1, 2]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("class_labels") && e.contains("no class embedding"),
        "{e}"
    );
}

#[test]
fn class_labels_out_of_range() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet/class_scale_shift");
    let files = load_unet_files(&DirSource(dir)).unwrap();
    let unet = UNet2DModel::load(&CpuBackend, files.config, &files.weights).unwrap();
    let x = CpuBackend.upload(&[1, 1, 16, 16], &[0.0; 256]).unwrap();
    let e = unet
        .forward(&CpuBackend, &x, &[1.0], Some(&[11]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("label 11 is outside 0..11"), "{e}");
    let e = unet
        .forward(&CpuBackend, &x, &[1.0], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("class-conditional"), "{e}");
}

#[test]
fn cli_reports_errors_without_panicking() {
    let dir = scratch("cli");
    let p = dir.join(WEIGHTS);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..100]).unwrap();
    let input = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(BASE)
        .join("input.safetensors");
    let out = Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .args(["forward", "--device", "cpu", "--model"])
        .arg(&dir)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(dir.join("out.safetensors"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("diffuse: error:")
            && stderr.contains(WEIGHTS)
            && !stderr.contains("panicked"),
        "{stderr}"
    );
}
