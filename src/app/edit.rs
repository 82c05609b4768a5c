//! The edit panel: the picture an edit starts from (painted with a brush, uploaded, or taken
//! from the result on screen), the inpainting mask painted over it, and the edit settings that
//! the Generate button then runs ([`EditState::job`]). The pixels live in two 2D canvases; the
//! engine gets plain RGBA.

use leptos::html::Canvas;
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast;
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement};

use super::canvas::decode_image;
use super::engine::{EditJob, EditMode, Image};
use super::state::{ModelState, RunState};
use std::sync::Arc;

/// The super-resolution model the Upscale mode runs (trained by `training/`, 32→64 RGB).
pub const UPSCALER_PATH: &str = "models/emoji-sr";
/// The pictures the upscaler takes: (channels, height, width) of its low-resolution input, the
/// images of its pair, the pixel emoji model.
pub const UPSCALER_INPUT: (usize, usize, usize) = (3, 32, 32);

/// What the Generate button does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Generate,
    Img2Img,
    Inpaint,
    Upscale,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Generate, Mode::Img2Img, Mode::Inpaint, Mode::Upscale];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Generate => "generate",
            Mode::Img2Img => "sdedit",
            Mode::Inpaint => "inpaint",
            Mode::Upscale => "upscale",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Mode::Generate => "Generate from noise",
            Mode::Img2Img => "Edit the picture (SDEdit)",
            Mode::Inpaint => "Inpaint the masked region",
            Mode::Upscale => "Upscale the picture ×2",
        }
    }

    /// The Generate button's label in this mode.
    pub fn verb(self) -> &'static str {
        match self {
            Mode::Generate => "Generate",
            Mode::Img2Img => "Edit",
            Mode::Inpaint => "Inpaint",
            Mode::Upscale => "Upscale",
        }
    }
}

/// Which canvas the brush paints on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Picture,
    Mask,
}

/// The edit settings and the two canvases (DOM nodes, not GPU objects), shared as context.
#[derive(Clone, Copy)]
pub struct EditState {
    pub mode: RwSignal<Mode>,
    /// SDEdit strength: 0 returns the picture, 1 ignores it.
    pub strength: RwSignal<f32>,
    /// RePaint passes per step.
    pub resample: RwSignal<usize>,
    pub color: RwSignal<String>,
    /// Brush radius in picture pixels.
    pub radius: RwSignal<f64>,
    pub target: RwSignal<Target>,
    pub picture: NodeRef<Canvas>,
    pub mask: NodeRef<Canvas>,
    /// The picture's size (channels, height, width): the model's image size.
    pub dims: Memo<(usize, usize, usize)>,
    pub error: RwSignal<Option<String>>,
}

impl EditState {
    pub fn new(models: ModelState) -> Self {
        let dims = Memo::new(move |_| match models.info.get().and_then(Result::ok) {
            Some(m) => match m.latent {
                Some(l) => (l.image_channels, l.image_height, l.image_width),
                None => (m.channels, m.height, m.width),
            },
            None => (3, 32, 32),
        });
        Self {
            mode: RwSignal::new(Mode::Generate),
            strength: RwSignal::new(0.6),
            resample: RwSignal::new(2),
            color: RwSignal::new("#e03131".into()),
            radius: RwSignal::new(2.0),
            target: RwSignal::new(Target::Picture),
            picture: NodeRef::new(),
            mask: NodeRef::new(),
            dims,
            error: RwSignal::new(None),
        }
    }

    /// The edit Generate should run (None in Generate mode), read from the canvases now.
    pub fn job(&self) -> Result<Option<EditJob>, String> {
        let mode = match self.mode.get_untracked() {
            Mode::Generate => return Ok(None),
            Mode::Img2Img => EditMode::Img2Img {
                strength: self.strength.get_untracked(),
            },
            Mode::Inpaint => EditMode::Inpaint {
                resample: self.resample.get_untracked(),
            },
            Mode::Upscale => EditMode::Upscale,
        };
        let picture = read(self.picture.get_untracked().as_ref())?;
        if mode == EditMode::Upscale {
            // The upscaler was trained on the emoji model's 32×32 RGB pictures: anything else
            // (Fashion-MNIST's grey garments, the latent model's 64×64) would come out as noise.
            let (c, h, w) = self.dims.get_untracked();
            if (c, h, w) != UPSCALER_INPUT {
                return Err(format!(
                    "Upscale runs the emoji super-resolution model (emoji-sr), which turns 32×32 RGB pictures into 64×64; this model makes {c}×{h}×{w} pictures. Pick the model “Emoji (RGB, 32×32)”, generate, then upscale the result."
                ));
            }
            let first = picture.rgba.get(..4).unwrap_or_default();
            if picture.rgba.chunks_exact(4).all(|p| p == first) {
                return Err("The picture to upscale is blank: press “Use the result” after a run, upload a picture, or paint on it first.".into());
            }
        }
        let mask = match mode {
            EditMode::Inpaint { .. } => {
                let mut m = read(self.mask.get_untracked().as_ref())?;
                // Painted (any alpha) = regenerate = white.
                let rgba: Vec<u8> = m
                    .rgba
                    .chunks_exact(4)
                    .flat_map(|p| if p[3] > 0 { [255; 4] } else { [0, 0, 0, 255] })
                    .collect();
                if !rgba.chunks_exact(4).any(|p| p[0] == 255) {
                    return Err(
                        "Paint the region to regenerate on the picture first (brush: mask).".into(),
                    );
                }
                m.rgba = Arc::new(rgba);
                Some(m)
            }
            _ => None,
        };
        Ok(Some(EditJob {
            mode,
            picture,
            mask,
        }))
    }
}

fn ctx2d(c: &HtmlCanvasElement) -> Result<CanvasRenderingContext2d, String> {
    c.get_context("2d")
        .map_err(|e| format!("{e:?}"))?
        .ok_or("no 2d context")?
        .dyn_into()
        .map_err(|_| "not a 2d context".to_string())
}

/// A canvas's pixels as an [`Image`].
fn read(c: Option<&HtmlCanvasElement>) -> Result<Image, String> {
    let c = c.ok_or("the edit canvas is not on the page")?;
    let (w, h) = (c.width() as usize, c.height() as usize);
    let data = ctx2d(c)?
        .get_image_data(0.0, 0.0, w as f64, h as f64)
        .map_err(|e| format!("{e:?}"))?
        .data()
        .0;
    Ok(Image {
        width: w,
        height: h,
        rgba: Arc::new(data),
    })
}

/// Resizes both canvases to `w × h` and clears them: the picture to the model's background
/// (black for one-channel Fashion-MNIST, white for the emoji), the mask to nothing.
fn reset(s: &EditState, c: usize, h: usize, w: usize) -> Result<(), String> {
    for r in [s.picture, s.mask] {
        if let Some(cv) = r.get_untracked() {
            cv.set_width(w as u32);
            cv.set_height(h as u32);
        }
    }
    if let Some(cv) = s.picture.get_untracked() {
        let ctx = ctx2d(&cv)?;
        ctx.set_fill_style_str(if c == 1 { "black" } else { "white" });
        ctx.fill_rect(0.0, 0.0, w as f64, h as f64);
    }
    clear_mask(s)
}

/// A region the mask can be set to from the keyboard (the brush needs a pointer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Region {
    Left,
    Right,
    Top,
    Bottom,
    Centre,
    Invert,
}

impl Region {
    const ALL: [Region; 6] = [
        Region::Left,
        Region::Right,
        Region::Top,
        Region::Bottom,
        Region::Centre,
        Region::Invert,
    ];

    fn label(self) -> &'static str {
        match self {
            Region::Left => "Left half",
            Region::Right => "Right half",
            Region::Top => "Top half",
            Region::Bottom => "Bottom half",
            Region::Centre => "Centre",
            Region::Invert => "Invert",
        }
    }

    fn id(self) -> &'static str {
        match self {
            Region::Left => "mask-left",
            Region::Right => "mask-right",
            Region::Top => "mask-top",
            Region::Bottom => "mask-bottom",
            Region::Centre => "mask-centre",
            Region::Invert => "mask-invert",
        }
    }
}

/// The mask's paint colour (any alpha above 0 counts as masked).
const MASK_COLOR: &str = "#ff2d55";

/// Adds a region to the mask, or inverts it.
fn mask_region(s: &EditState, region: Region) -> Result<(), String> {
    let cv = s.mask.get_untracked().ok_or("no mask canvas")?;
    let (w, h) = (cv.width() as f64, cv.height() as f64);
    let ctx = ctx2d(&cv)?;
    ctx.set_fill_style_str(MASK_COLOR);
    match region {
        Region::Left => ctx.fill_rect(0.0, 0.0, (w / 2.0).ceil(), h),
        Region::Right => ctx.fill_rect((w / 2.0).floor(), 0.0, w, h),
        Region::Top => ctx.fill_rect(0.0, 0.0, w, (h / 2.0).ceil()),
        Region::Bottom => ctx.fill_rect(0.0, (h / 2.0).floor(), w, h),
        Region::Centre => ctx.fill_rect(w / 4.0, h / 4.0, w / 2.0, h / 2.0),
        Region::Invert => {
            let m = read(Some(&cv))?;
            let rgba: Vec<u8> = m
                .rgba
                .chunks_exact(4)
                .flat_map(|p| if p[3] > 0 { [0; 4] } else { [255, 45, 85, 255] })
                .collect();
            return super::canvas::draw_rgba(&cv, &rgba, m.width, m.height);
        }
    }
    Ok(())
}

fn clear_mask(s: &EditState) -> Result<(), String> {
    if let Some(cv) = s.mask.get_untracked() {
        ctx2d(&cv)?.clear_rect(0.0, 0.0, cv.width() as f64, cv.height() as f64);
    }
    Ok(())
}

/// Puts RGBA (`w × h`) on the picture canvas, scaled to its size.
fn put_picture(s: &EditState, rgba: &[u8], w: usize, h: usize) -> Result<(), String> {
    let cv = s.picture.get_untracked().ok_or("no picture canvas")?;
    if (cv.width() as usize, cv.height() as usize) == (w, h) {
        return super::canvas::draw_rgba(&cv, rgba, w, h);
    }
    let tmp: HtmlCanvasElement = document()?
        .create_element("canvas")
        .map_err(|e| format!("{e:?}"))?
        .dyn_into()
        .map_err(|_| "not a canvas")?;
    super::canvas::draw_rgba(&tmp, rgba, w, h)?;
    let ctx = ctx2d(&cv)?;
    ctx.draw_image_with_html_canvas_element_and_dw_and_dh(
        &tmp,
        0.0,
        0.0,
        cv.width() as f64,
        cv.height() as f64,
    )
    .map_err(|e| format!("{e:?}"))
}

fn document() -> Result<web_sys::Document, String> {
    web_sys::window()
        .and_then(|w| w.document())
        .ok_or_else(|| "no document".to_string())
}

/// The top-left sample of a batch grid (`grid` is `gw` wide) of `w × h` samples.
fn crop(grid: &[u8], gw: usize, w: usize, h: usize) -> Vec<u8> {
    (0..h)
        .flat_map(|y| grid[y * gw * 4..(y * gw + w) * 4].iter().copied())
        .collect()
}

/// The edit settings (under the mode picker) and the picture/mask canvases with the brush.
#[component]
pub fn EditPanel() -> impl IntoView {
    let s = expect_context::<EditState>();
    let run = expect_context::<RunState>();
    // Size and clear the canvases whenever the model's image size changes.
    Effect::new(move |_| {
        let (c, h, w) = s.dims.get();
        let _ = (s.picture.get(), s.mask.get());
        if let Err(e) = reset(&s, c, h, w) {
            s.error.set(Some(e));
        }
    });
    let last = StoredValue::new(None::<(f64, f64)>);
    let paint = move |e: &web_sys::PointerEvent, from: Option<(f64, f64)>| {
        let Some(cv) = (match s.target.get_untracked() {
            Target::Picture => s.picture.get_untracked(),
            Target::Mask => s.mask.get_untracked(),
        }) else {
            return;
        };
        let Some(el) = e
            .current_target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
        else {
            return;
        };
        let rect = el.get_bounding_client_rect();
        let x = (e.client_x() as f64 - rect.left()) * cv.width() as f64 / rect.width().max(1.0);
        let y = (e.client_y() as f64 - rect.top()) * cv.height() as f64 / rect.height().max(1.0);
        let Ok(ctx) = ctx2d(&cv) else { return };
        let color = match s.target.get_untracked() {
            Target::Picture => s.color.get_untracked(),
            Target::Mask => MASK_COLOR.to_string(),
        };
        ctx.set_fill_style_str(&color);
        let r = s.radius.get_untracked();
        // Dabs every half radius along the segment, so fast strokes stay continuous.
        let (x0, y0) = from.unwrap_or((x, y));
        let n = (((x - x0).hypot(y - y0)) / (r * 0.5).max(0.25))
            .ceil()
            .max(1.0) as usize;
        for i in 0..=n {
            let t = i as f64 / n as f64;
            ctx.begin_path();
            let _ = ctx.arc(
                x0 + (x - x0) * t,
                y0 + (y - y0) * t,
                r,
                0.0,
                std::f64::consts::TAU,
            );
            ctx.fill();
        }
        last.set_value(Some((x, y)));
    };
    let use_result = move |_| {
        let (_, h, w) = s.dims.get_untracked();
        let r = run.frames.with_untracked(|v| {
            let f = v
                .get(run.view.get_untracked())
                .ok_or("generate something first")?;
            let pic = f.picture();
            if pic.width < w || pic.height < h {
                return Err(format!(
                    "the result is {}×{}, the edit needs {w}×{h}",
                    pic.width, pic.height
                ));
            }
            put_picture(&s, &crop(&pic.rgba, pic.width, w, h), w, h)
        });
        s.error.set(r.err());
    };
    let on_upload = move |e: leptos::ev::Event| {
        let Some(file) = e
            .target()
            .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
            .and_then(|i| i.files())
            .and_then(|f| f.get(0))
        else {
            return;
        };
        let Ok(url) = web_sys::Url::create_object_url_with_blob(&file) else {
            return;
        };
        let (c, h, w) = s.dims.get_untracked();
        spawn_local(async move {
            let bg = if c == 1 { "black" } else { "white" };
            let r = match decode_image(&url, w, h, bg, c == 1).await {
                Ok(rgba) => put_picture(&s, &rgba, w, h),
                Err(e) => Err(e),
            };
            let _ = web_sys::Url::revoke_object_url(&url);
            s.error.set(r.err());
        });
    };
    let target_button = move |t: Target, label: &'static str, id: &'static str| {
        view! {
            <button type="button" id=id class="secondary" class:active=move || s.target.get() == t
                aria-pressed=move || (s.target.get() == t).to_string()
                on:click=move |_| s.target.set(t)>{label}</button>
        }
    };
    view! {
        <section class="panel edit" id="edit-panel" aria-label="The picture to edit"
            hidden=move || s.mode.get() == Mode::Generate>
            <h2>{move || match s.mode.get() {
                Mode::Upscale => "The picture to upscale",
                Mode::Inpaint => "The picture and the region to regenerate",
                _ => "The picture to edit",
            }}</h2>
            <p class="muted">{move || match s.mode.get() {
                Mode::Img2Img => "SDEdit: the picture is noised to the level the strength picks (the noising process), then denoised with the sampler and settings on the left. Paint on it, upload one, or take the result on screen.",
                Mode::Inpaint => "RePaint: paint the mask (red) over what should be redrawn; at every step the rest is replaced by the picture noised to that step, so the model fills in only the mask.",
                Mode::Upscale => "The super-resolution model (emoji-sr, trained by this project) draws a 2× larger picture conditioned on this one; its x̂₀ is kept consistent with the input at every step.",
                Mode::Generate => "",
            }}</p>
            <div class="edit-stack"
                on:pointerdown=move |e: web_sys::PointerEvent| {
                    if let Some(el) = e.current_target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()) {
                        let _ = el.set_pointer_capture(e.pointer_id());
                    }
                    paint(&e, None);
                }
                on:pointermove=move |e: web_sys::PointerEvent| {
                    if let Some(p) = last.get_value() {
                        paint(&e, Some(p));
                    }
                }
                on:pointerup=move |_| last.set_value(None)
                on:pointercancel=move |_| last.set_value(None)>
                <canvas id="edit-picture" node_ref=s.picture width="32" height="32" role="img"
                    aria-label="The picture (paint on it with the brush)"></canvas>
                <canvas id="edit-mask" node_ref=s.mask width="32" height="32" role="img"
                    aria-label="The inpainting mask, over the picture"></canvas>
            </div>
            <div class="row tools">
                {target_button(Target::Picture, "Brush: picture", "brush-picture")}
                {target_button(Target::Mask, "Brush: mask", "brush-mask")}
                <label for="brush-color" class="sr">"Brush colour"</label>
                <input type="color" id="brush-color" prop:value=move || s.color.get()
                    on:input=move |e| s.color.set(event_target_value(&e)) />
                <label for="brush-size">"Size " <output>{move || format!("{:.0}", s.radius.get())}</output></label>
                <input type="range" id="brush-size" min="1" max="8" step="1"
                    prop:value=move || s.radius.get().to_string()
                    on:input=move |e| if let Ok(v) = event_target_value(&e).parse() { s.radius.set(v) } />
            </div>
            <div class="row tools">
                <button type="button" id="edit-use-result" class="secondary" on:click=use_result
                    disabled=move || run.frames.with(Vec::is_empty)>"Use the result"</button>
                // The input first: its keyboard focus shows as the ring of the label after it.
                <input type="file" id="edit-upload" class="sr" accept="image/*" on:change=on_upload />
                <label for="edit-upload" class="file-button">"Upload…"</label>
                <button type="button" id="edit-clear" class="secondary" on:click=move |_| {
                    let (c, h, w) = s.dims.get_untracked();
                    s.error.set(reset(&s, c, h, w).err());
                }>"Clear"</button>
                <button type="button" id="edit-clear-mask" class="secondary"
                    on:click=move |_| s.error.set(clear_mask(&s).err())>"Clear mask"</button>
            </div>
            <div class="row tools" role="group" aria-labelledby="mask-regions-title"
                hidden=move || s.mode.get() != Mode::Inpaint>
                <span id="mask-regions-title" class="muted">"Mask:"</span>
                {Region::ALL.into_iter().map(|r| view! {
                    <button type="button" id=r.id() class="secondary"
                        on:click=move |_| s.error.set(mask_region(&s, r).err())>{r.label()}</button>
                }).collect_view()}
            </div>
            {move || s.error.get().map(|e| view! { <p class="error" role="alert" id="edit-error">{e}</p> })}
        </section>
    }
}

/// The mode picker and the mode's settings, inside the generation form.
#[component]
pub fn EditControls() -> impl IntoView {
    let s = expect_context::<EditState>();
    view! {
        <label for="mode">"Mode"</label>
        <select id="mode" on:change=move |e| {
            let v = event_target_value(&e);
            if let Some(m) = Mode::ALL.into_iter().find(|m| m.name() == v) {
                s.mode.set(m);
            }
        }>
            {Mode::ALL.into_iter().map(|m| view! {
                <option value=m.name() prop:selected=move || s.mode.get() == m>{m.title()}</option>
            }).collect_view()}
        </select>
        <Show when=move || s.mode.get() == Mode::Img2Img>
            <label for="strength">"Strength: " <output>{move || format!("{:.2}", s.strength.get())}</output></label>
            <input id="strength" type="range" min="0" max="1" step="0.05"
                prop:value=move || s.strength.get().to_string()
                on:input=move |e| if let Ok(v) = event_target_value(&e).parse() { s.strength.set(v) } />
        </Show>
        <Show when=move || s.mode.get() == Mode::Inpaint>
            <label for="resample">"Resampling (RePaint): " <output>{move || s.resample.get()}</output></label>
            <input id="resample" type="range" min="1" max="10" step="1"
                prop:value=move || s.resample.get().to_string()
                on:input=move |e| if let Ok(v) = event_target_value(&e).parse() { s.resample.set(v) } />
        </Show>
    }
}
