//! A remedy outside gradguard declares what it is, and the loop's record carries it.

use gradguard_core::{
    Action, ActionRecord, ClipScope, Remedy, RemedyCapabilities, RemedyContext, RemedyError,
};
use serde::{Deserialize, Serialize};

/// A third-party remedy: clips each unit against its weights (its `apply` is beside the point).
#[derive(Serialize, Deserialize)]
struct MyUnitClip {
    factor: f64,
}

#[typetag::serde(name = "test_my_unit_clip")]
impl Remedy for MyUnitClip {
    fn apply(&mut self, _ctx: &mut RemedyContext<'_, '_>) -> Result<Action, RemedyError> {
        Ok(Action::Continue)
    }

    fn capabilities(&self) -> RemedyCapabilities {
        RemedyCapabilities::NONE
            .clipping(ClipScope::PerUnit)
            .reading_weights()
    }
}

/// A remedy that declares nothing gets the default.
#[derive(Serialize, Deserialize)]
struct Quiet;

#[typetag::serde(name = "test_quiet")]
impl Remedy for Quiet {
    fn apply(&mut self, _ctx: &mut RemedyContext<'_, '_>) -> Result<Action, RemedyError> {
        Ok(Action::Continue)
    }
}

#[test]
fn a_third_party_remedy_declares_itself_and_records_carry_it() {
    let r: Box<dyn Remedy> =
        serde_json::from_str(r#"{"kind":"test_my_unit_clip","factor":0.01}"#).unwrap();
    let caps = r.capabilities();
    assert_eq!(caps.clips, Some(ClipScope::PerUnit));
    assert!(caps.needs_weights);
    assert!(!caps.penalises);
    let rec = ActionRecord::new(r.typetag_name(), &caps, true, Action::Continue);
    assert_eq!(rec.clips, Some(ClipScope::PerUnit));

    let q: Box<dyn Remedy> = serde_json::from_str(r#"{"kind":"test_quiet"}"#).unwrap();
    assert_eq!(q.capabilities(), RemedyCapabilities::default());
    let rec = ActionRecord::new("test_quiet", &q.capabilities(), false, Action::Continue);
    assert_eq!(rec.clips, None);
}
