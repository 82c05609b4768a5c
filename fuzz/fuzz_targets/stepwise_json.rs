//! A model folder's `stepwise.json` text: its run defaults are parsed, resolved into one run's
//! settings, and described for every sampler (the note the page shows under its controls).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stepwise::defaults::{x0_clipping_note, ModelDefaults, Requested};
use stepwise::sampler::{SamplerKind, SchedulerConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(d) = ModelDefaults::from_stepwise_json(text, "stepwise.json") else {
        return;
    };
    let run = d
        .resolve(Requested::default(), || Ok(SamplerKind::Ddim))
        .expect("a parsed stepwise.json resolves");
    assert!(run.steps > 0 && run.eta.is_finite() && run.guidance.is_finite());
    let config = SchedulerConfig::from_json_str("{}").expect("an empty scheduler config parses");
    for kind in SamplerKind::ALL {
        assert!(!x0_clipping_note(&config, kind, &d).is_empty());
    }
});
