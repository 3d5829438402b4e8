//! Other frameworks' names for a plugin kind, declared by the plugin itself.
//!
//! A plugin whose semantics equal another framework's API submits a [`KindAlias`] with
//! [`describe_alias!`](crate::describe_alias) beside its implementation; spec parsing then
//! reads that name as the kind (`clip_grad_norm` is read as `clip_global_norm`), and
//! `gradguard plugins` lists it. Nothing outside the plugin's file lists aliases.

use crate::plugin::Family;

/// Another name for a plugin kind, with the same semantics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindAlias {
    /// The family of the kind.
    pub family: Family,
    /// The other name, as a spec may write it (e.g. `clip_grad_norm`).
    pub alias: &'static str,
    /// The kind it names (e.g. `clip_global_norm`).
    pub kind: &'static str,
    /// Where the name comes from (e.g. "PyTorch's torch.nn.utils.clip_grad_norm_").
    pub origin: &'static str,
}

inventory::collect!(KindAlias);

/// Registers a [`KindAlias`].
///
/// ```
/// use gradguard_core::{describe_alias, Family, KindAlias};
/// describe_alias!(KindAlias {
///     family: Family::Remedy,
///     alias: "my_framework_clip",
///     kind: "clip_global_norm",
///     origin: "My framework's clip",
/// });
/// ```
#[macro_export]
macro_rules! describe_alias {
    ($alias:expr) => {
        $crate::__private::inventory::submit! { $alias }
    };
}

/// The kind `name` stands for in `family`, when it is a declared alias.
pub fn resolve_alias(family: Family, name: &str) -> Option<&'static KindAlias> {
    inventory::iter::<KindAlias>
        .into_iter()
        .find(|a| a.family == family && a.alias == name)
}

/// The kind `name` stands for in any family, when it is a declared alias (spec errors do not
/// always say which family they are in; aliases are unique across families).
pub fn resolve_any_alias(name: &str) -> Option<&'static KindAlias> {
    inventory::iter::<KindAlias>
        .into_iter()
        .find(|a| a.alias == name)
}

/// Every declared alias, sorted by family, kind and alias.
pub fn aliases() -> Vec<&'static KindAlias> {
    let mut v: Vec<&'static KindAlias> = inventory::iter::<KindAlias>.into_iter().collect();
    v.sort_by(|a, b| (a.family, a.kind, a.alias).cmp(&(b.family, b.kind, b.alias)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::describe_alias!(KindAlias {
        family: Family::Detector,
        alias: "__test_alias",
        kind: "__test_kind",
        origin: "a test",
    });

    #[test]
    fn a_declared_alias_resolves_to_its_kind_in_its_family_only() {
        let a = resolve_alias(Family::Detector, "__test_alias").expect("declared");
        assert_eq!(a.kind, "__test_kind");
        assert!(resolve_alias(Family::Remedy, "__test_alias").is_none());
        assert_eq!(
            resolve_any_alias("__test_alias").map(|a| a.kind),
            Some("__test_kind")
        );
        assert!(resolve_any_alias("__nothing").is_none());
        assert!(aliases().iter().any(|a| a.alias == "__test_alias"));
    }
}
