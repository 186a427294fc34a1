//! Server-side apply: field ownership per manager, conflicts, and removal of
//! fields a manager applied before and now omits. Lists are atomic (one leaf).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// The leaf paths a field manager owns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet(BTreeSet<Vec<String>>);

impl FieldSet {
    /// Dot-joined paths, sorted.
    pub fn paths(&self) -> Vec<String> {
        self.0.iter().map(|p| p.join(".")).collect()
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub(crate) fn extend(&mut self, other: &FieldSet) {
        self.0.extend(other.0.iter().cloned());
    }
    /// Removes every path that overlaps (is a prefix of, or is under) a path of `other`.
    pub(crate) fn remove_all(&mut self, other: &FieldSet) {
        self.0.retain(|p| !other.0.iter().any(|o| overlaps(p, o)));
    }
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn leaves(v: &Value, prefix: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                prefix.push(k.clone());
                leaves(c, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The part of an object a manager can own: no apiVersion/kind, metadata only labels and
/// annotations; with a status subresource, `status_only` picks status or everything else.
fn ownable(v: &Value, status_sub: bool, status_only: Option<bool>) -> Value {
    let mut out = Map::new();
    if let Some(o) = v.as_object() {
        for (k, c) in o {
            match k.as_str() {
                "apiVersion" | "kind" => {}
                "metadata" => {
                    let mut m = Map::new();
                    for f in ["labels", "annotations"] {
                        if let Some(x) = c.get(f) {
                            m.insert(f.into(), x.clone());
                        }
                    }
                    if !m.is_empty() && status_only != Some(true) {
                        out.insert(k.clone(), Value::Object(m));
                    }
                }
                "status" if status_sub && status_only == Some(false) => {}
                _ if status_sub && status_only == Some(true) && k != "status" => {}
                _ => {
                    out.insert(k.clone(), c.clone());
                }
            }
        }
    }
    Value::Object(out)
}

/// Leaf paths of the ownable part of `v`.
pub(crate) fn owned_paths(v: &Value, status_sub: bool, status_only: Option<bool>) -> FieldSet {
    let mut out = BTreeSet::new();
    let o = ownable(v, status_sub, status_only);
    if o.as_object().is_some_and(|m| !m.is_empty()) {
        leaves(&o, &mut Vec::new(), &mut out);
    }
    FieldSet(out)
}

fn at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

/// Leaf paths whose values differ between `a` and `b` (ownable parts only).
pub(crate) fn changed_paths(a: &Value, b: &Value) -> FieldSet {
    let a = ownable(a, false, None);
    let b = ownable(b, false, None);
    let mut all = BTreeSet::new();
    leaves(&a, &mut Vec::new(), &mut all);
    leaves(&b, &mut Vec::new(), &mut all);
    FieldSet(all.into_iter().filter(|p| at(&a, p) != at(&b, p) && !p.is_empty()).collect())
}

/// Removes a leaf, and every parent object the removal leaves empty (as the apiserver
/// drops a map entry whose fields no manager owns any more).
fn remove_path(v: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else { return };
    let Some(o) = v.as_object_mut() else { return };
    if rest.is_empty() {
        o.remove(first);
        return;
    }
    if let Some(child) = o.get_mut(first) {
        remove_path(child, rest);
        if child.as_object().is_some_and(|m| m.is_empty()) {
            o.remove(first);
        }
    }
}

fn deep_merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => deep_merge(existing, v),
                    _ => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (into, from) => *into = from.clone(),
    }
}

/// Applies `applied` for `manager` over `current`. Returns the new object and ownership, or
/// the conflicts (another manager owns a field whose value would change) when not forced.
pub(crate) fn apply(
    current: &Value,
    applied: &Value,
    managers: &BTreeMap<String, FieldSet>,
    manager: &str,
    force: bool,
    status_sub: bool,
    status_write: bool,
) -> Result<(Value, BTreeMap<String, FieldSet>), Vec<String>> {
    let scope = if status_sub { Some(status_write) } else { None };
    let part = ownable(applied, status_sub, scope);
    let new_set = owned_paths(applied, status_sub, scope);
    let mut managers = managers.clone();
    let mut conflicts = Vec::new();
    for (m, fs) in managers.iter_mut() {
        if m == manager {
            continue;
        }
        let clash: BTreeSet<Vec<String>> =
            fs.0.iter()
                .filter(|p| new_set.0.iter().any(|n| overlaps(p, n)))
                .filter(|p| {
                    // A conflict only when the value would change.
                    new_set.0.iter().filter(|n| overlaps(p, n)).any(|n| at(current, n) != at(&part, n))
                })
                .cloned()
                .collect();
        if clash.is_empty() {
            continue;
        }
        if force {
            fs.0.retain(|p| !clash.contains(p));
        } else {
            for p in clash {
                conflicts.push(format!("conflict with \"{m}\": .{}", p.join(".")));
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    let mut next = current.clone();
    let old = managers.get(manager).cloned().unwrap_or_default();
    for p in old.0.iter() {
        let in_scope = match scope {
            Some(true) => p.first().map(String::as_str) == Some("status"),
            Some(false) => p.first().map(String::as_str) != Some("status"),
            None => true,
        };
        // Kept when applied again, or when it is an ancestor of an applied field. A path under
        // an applied leaf is not kept: applying `used: {}` drops the `used.<ip>` applied before.
        let kept = new_set.0.iter().any(|n| n.starts_with(p))
            || managers.iter().any(|(m, fs)| m != manager && fs.0.iter().any(|o| overlaps(p, o)));
        if in_scope && !kept {
            remove_path(&mut next, p);
        }
    }
    deep_merge(&mut next, &part);
    let mut mine: FieldSet = old;
    mine.0.retain(|p| match scope {
        Some(true) => p.first().map(String::as_str) != Some("status"),
        Some(false) => p.first().map(String::as_str) == Some("status"),
        None => false,
    });
    mine.extend(&new_set);
    managers.insert(manager.to_string(), mine);
    managers.retain(|_, f| !f.is_empty());
    Ok((next, managers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn apply_conflicts_only_on_changed_fields_owned_by_another_manager_and_force_takes_them() {
        let cur = json!({"spec": {"holder": "a", "ttl": 15}});
        let mut managers = BTreeMap::new();
        managers.insert("a".to_string(), owned_paths(&cur, false, None));
        let same = json!({"spec": {"holder": "a"}});
        assert!(apply(&cur, &same, &managers, "b", false, false, false).is_ok());
        let other = json!({"spec": {"holder": "b"}});
        let err = apply(&cur, &other, &managers, "b", false, false, false).unwrap_err();
        assert_eq!(err, vec!["conflict with \"a\": .spec.holder".to_string()]);
        let (next, m) = apply(&cur, &other, &managers, "b", true, false, false).unwrap();
        assert_eq!(next, json!({"spec": {"holder": "b", "ttl": 15}}));
        assert_eq!(m["a"].paths(), vec!["spec.ttl"]);
        assert_eq!(m["b"].paths(), vec!["spec.holder"]);
    }

    #[test]
    fn apply_removes_fields_the_manager_applied_before_and_now_omits() {
        let cur =
            json!({"status": {"release": {"10.0.0.1": "marked", "10.0.0.2": "marked"}, "used": {"x": "p"}}});
        let mut managers = BTreeMap::new();
        managers.insert(
            "op".to_string(),
            FieldSet(
                [vec!["status", "release", "10.0.0.1"], vec!["status", "release", "10.0.0.2"]]
                    .into_iter()
                    .map(|p| p.into_iter().map(String::from).collect())
                    .collect(),
            ),
        );
        managers.insert(
            "agent".to_string(),
            FieldSet([vec!["status".to_string(), "used".into(), "x".into()]].into()),
        );
        let applied = json!({"status": {"release": {"10.0.0.2": "marked"}}});
        let (next, _) = apply(&cur, &applied, &managers, "op", false, true, true).unwrap();
        assert_eq!(next, json!({"status": {"release": {"10.0.0.2": "marked"}, "used": {"x": "p"}}}));
    }

    #[test]
    fn a_map_entry_whose_fields_the_manager_omits_goes_away_whole() {
        let cur = json!({"spec": {"pool": {
            "10.0.0.1": {"eni": "eni-1", "subnet": "s"},
            "10.0.0.2": {"eni": "eni-1", "subnet": "s"}}}});
        let mut managers = BTreeMap::new();
        managers.insert("op".to_string(), owned_paths(&cur, true, Some(false)));
        let applied = json!({"spec": {"pool": {"10.0.0.2": {"eni": "eni-1", "subnet": "s"}}}});
        let (next, m) = apply(&cur, &applied, &managers, "op", true, true, false).unwrap();
        assert_eq!(next, applied, "no empty entry is left behind for 10.0.0.1");
        assert_eq!(m["op"].paths(), vec!["spec.pool.10.0.0.2.eni", "spec.pool.10.0.0.2.subnet"]);
    }

    #[test]
    fn applying_an_empty_map_drops_the_entries_the_manager_applied_before() {
        let cur = json!({"status": {"used": {"10.0.0.1": "default/a", "10.0.0.2": "default/b"}, "inUse": 2}});
        let mut managers = BTreeMap::new();
        managers.insert("agent".to_string(), owned_paths(&cur, true, Some(true)));
        let applied = json!({"status": {"used": {}, "inUse": 0}});
        let (next, m) = apply(&cur, &applied, &managers, "agent", true, true, true).unwrap();
        assert_eq!(next, applied, "every pod is gone, so is every entry");
        assert_eq!(m["agent"].paths(), vec!["status.inUse", "status.used"]);
    }
}
