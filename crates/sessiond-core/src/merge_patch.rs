//! JSON Merge Patch (RFC 7396): apply, and the inverse operation `diff` that produces the patch
//! turning one document into another.

use serde_json::{Map, Value};

/// Applies `patch` to `target` in place, exactly as RFC 7396 section 2 describes.
pub fn apply(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                apply(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// The merge patch that turns `from` into `to`, or `None` when they are equal.
///
/// Object members present in `to` with a `null` value cannot be expressed by a merge patch (null
/// means delete); such members come out deleted.
pub fn diff(from: &Value, to: &Value) -> Option<Value> {
    if from == to {
        return None;
    }
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            let mut patch = Map::new();
            for key in a.keys() {
                if !b.contains_key(key) {
                    patch.insert(key.clone(), Value::Null);
                }
            }
            for (key, bv) in b {
                match a.get(key) {
                    Some(av) => {
                        if let Some(p) = diff(av, bv) {
                            patch.insert(key.clone(), p);
                        }
                    }
                    None => {
                        patch.insert(key.clone(), strip_nulls(bv));
                    }
                }
            }
            Some(Value::Object(patch))
        }
        (_, Value::Object(_)) => Some(strip_nulls(to)),
        _ => Some(to.clone()),
    }
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Every example of RFC 7396 appendix A.
    #[test]
    fn rfc7396_appendix_a() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (target, patch, expected) in cases {
            let mut t = target.clone();
            apply(&mut t, &patch);
            assert_eq!(t, expected, "target {target} patch {patch}");
        }
    }

    #[test]
    fn diff_of_equal_documents_is_none() {
        assert_eq!(
            diff(&json!({"a":[1,{"b":2}]}), &json!({"a":[1,{"b":2}]})),
            None
        );
    }

    /// JSON values whose objects hold no null members: the documents a merge patch can produce.
    fn document() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            "[a-z]{0,4}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-d]", inner, 0..4).prop_map(|m| {
                    Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).collect())
                }),
            ]
        })
    }

    fn object_document() -> impl Strategy<Value = Value> {
        prop::collection::btree_map("[a-e]", document(), 0..5)
            .prop_map(|m| Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).collect()))
    }

    /// A merge patch: nulls allowed anywhere.
    fn patch() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i32>().prop_map(Value::from),
            "[a-z]{0,3}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                prop::collection::btree_map("[a-e]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// patch, then diff, then patch again round-trips: applying the diff of (a, patched a) to a
        /// gives patched a back.
        #[test]
        fn patch_diff_patch_round_trips(a in object_document(), p in patch()) {
            let mut b = a.clone();
            apply(&mut b, &p);
            let mut again = a.clone();
            if let Some(d) = diff(&a, &b) {
                apply(&mut again, &d);
            }
            prop_assert_eq!(again, b);
        }

        /// diff then apply: for any two null-free documents, applying diff(a, b) to a yields b.
        #[test]
        fn diff_then_apply_yields_target(a in object_document(), b in object_document()) {
            let mut t = a.clone();
            if let Some(d) = diff(&a, &b) {
                apply(&mut t, &d);
            }
            prop_assert_eq!(t, b);
        }
    }
}
