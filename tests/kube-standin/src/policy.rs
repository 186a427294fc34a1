//! `ValidatingAdmissionPolicy` (admissionregistration.k8s.io/v1) evaluated the way
//! kube-apiserver does, with a CEL interpreter (the `cel` crate, optional syntax on):
//! a policy and its binding (`validationActions: [Deny]`) are compiled once; each
//! CREATE/UPDATE of a matched resource binds `object`, `oldObject` (null on CREATE),
//! `request` (operation, userInfo with `extra`, resource, subResource, name, namespace)
//! and `variables` (evaluated in order, each seeing the ones before); `matchConditions`
//! decide whether the policy applies; the first failing validation denies with
//! `ValidatingAdmissionPolicy '<policy>' with binding '<binding>' denied request: <message>`
//! and the validation's `reason` as the HTTP code (Invalid 422 when it gives none).
//! An expression that fails to evaluate is handled by `failurePolicy` (Fail: denied).
//!
//! Left out (docs/testing.md): `paramKind`/`paramRef`, `authorizer`, `namespaceObject`,
//! the binding's `matchResources`, `auditAnnotations`, Warn/Audit actions, type checking,
//! and the Kubernetes CEL libraries beyond the standard ones (the chart's policy uses none).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cel::objects::Key;
use cel::{Context, Env, Program};
use serde_json::Value;

/// Who makes a request, as the authenticator saw it (authentication.k8s.io/v1 UserInfo).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// `system:serviceaccount:<namespace>:<name>` for a service account.
    pub username: String,
    /// The user's uid.
    pub uid: String,
    /// Groups the user is in.
    pub groups: Vec<String>,
    /// Extra claims, e.g. `authentication.kubernetes.io/node-name` from a bound token.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The cluster admin, as requests without a token are taken.
    pub fn admin() -> Self {
        Self {
            username: "system:admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            ..Default::default()
        }
    }

    /// A service account's bound token from a pod on `node` (Kubernetes 1.32+ puts the node's
    /// name in `authentication.kubernetes.io/node-name`).
    pub fn service_account_on_node(namespace: &str, name: &str, node: &str) -> Self {
        let mut extra = BTreeMap::new();
        extra.insert("authentication.kubernetes.io/node-name".to_owned(), vec![node.to_owned()]);
        extra.insert("authentication.kubernetes.io/pod-name".to_owned(), vec![format!("{name}-{node}")]);
        Self {
            username: format!("system:serviceaccount:{namespace}:{name}"),
            uid: format!("sa-{namespace}-{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
            extra,
        }
    }

    fn to_json(&self) -> Value {
        let mut user = serde_json::json!({"username": self.username, "uid": self.uid, "groups": self.groups});
        // Like the apiserver's JSON (omitempty): no `extra` key when there are no claims.
        if !self.extra.is_empty() {
            user["extra"] = serde_json::json!(self.extra);
        }
        user
    }
}

/// One admission request as a policy sees it.
#[derive(Clone, Debug)]
pub struct AdmissionRequest<'a> {
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub operation: &'a str,
    /// API group of the resource ("" for core).
    pub group: &'a str,
    /// API version.
    pub version: &'a str,
    /// Resource plural (`eninodes`).
    pub resource: &'a str,
    /// Subresource (`status`) or "".
    pub subresource: &'a str,
    /// The object's name.
    pub name: &'a str,
    /// The object's namespace ("" for cluster-scoped).
    pub namespace: &'a str,
    /// The object as it would be stored.
    pub object: &'a Value,
    /// The stored object, on UPDATE.
    pub old_object: Option<&'a Value>,
    /// Who asks.
    pub user: &'a UserInfo,
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// HTTP status code.
    pub code: u16,
    /// The Status `reason`.
    pub reason: String,
    /// The Status `message`.
    pub message: String,
}

struct Compiled {
    source: String,
    program: Program,
}

struct Validation {
    expression: Compiled,
    message: Option<String>,
    message_expression: Option<Compiled>,
    reason: String,
}

struct ResourceRule {
    groups: Vec<String>,
    versions: Vec<String>,
    operations: Vec<String>,
    resources: Vec<String>,
}

/// A compiled policy with its binding.
pub struct AdmissionPolicy {
    name: String,
    binding: String,
    fail_closed: bool,
    rules: Vec<ResourceRule>,
    match_conditions: Vec<(String, Compiled)>,
    variables: Vec<(String, Compiled)>,
    validations: Vec<Validation>,
    env: Arc<Env>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
}

fn any_or(list: &[String], value: &str) -> bool {
    list.iter().any(|x| x == "*" || x == value)
}

/// JSON as Kubernetes hands it to CEL: integers are `int`, objects are maps with string keys.
pub fn cel_value(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(cel_value).collect())),
        Value::Object(map) => {
            let map: HashMap<Key, cel::Value> =
                map.iter().map(|(k, v)| (Key::String(Arc::new(k.clone())), cel_value(v))).collect();
            map.into()
        }
    }
}

impl AdmissionPolicy {
    /// Compiles `policy` (a ValidatingAdmissionPolicy) with `binding` (its
    /// ValidatingAdmissionPolicyBinding); the error names the expression that does not compile.
    pub fn compile(policy: &Value, binding: &Value) -> Result<Self, String> {
        let name = policy["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let binding_name = binding["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        if binding["spec"]["policyName"] != name.as_str() {
            return Err(format!(
                "binding {binding_name:?} names policy {}, not {name:?}",
                binding["spec"]["policyName"]
            ));
        }
        if !strings(&binding["spec"]["validationActions"]).iter().any(|a| a == "Deny") {
            return Err(format!(
                "binding {binding_name:?} has no Deny action: the stand-in only enforces Deny"
            ));
        }
        let spec = &policy["spec"];
        if !spec["paramKind"].is_null() {
            return Err(format!("policy {name:?} has a paramKind: params are not supported by the stand-in"));
        }
        let env = Arc::new(Env::stdlib());
        let compile = |what: &str, source: &str| -> Result<Compiled, String> {
            let program = env
                .compile(source)
                .map_err(|e| format!("policy {name:?}: {what} {source:?} does not compile: {e}"))?;
            Ok(Compiled { source: source.to_owned(), program })
        };
        let rules = spec["matchConstraints"]["resourceRules"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| ResourceRule {
                groups: strings(&r["apiGroups"]),
                versions: strings(&r["apiVersions"]),
                operations: strings(&r["operations"]),
                resources: strings(&r["resources"]),
            })
            .collect();
        let named = |key: &str| -> Result<Vec<(String, Compiled)>, String> {
            spec[key]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let n = c["name"].as_str().unwrap_or_default().to_owned();
                    let e = c["expression"].as_str().unwrap_or_default();
                    Ok((n.clone(), compile(&format!("{key} {n:?}"), e)?))
                })
                .collect()
        };
        let mut validations = Vec::new();
        for v in spec["validations"].as_array().into_iter().flatten() {
            validations.push(Validation {
                expression: compile("validation", v["expression"].as_str().unwrap_or_default())?,
                message: v["message"].as_str().map(str::to_owned),
                message_expression: match v["messageExpression"].as_str() {
                    Some(e) => Some(compile("messageExpression", e)?),
                    None => None,
                },
                reason: v["reason"].as_str().unwrap_or("Invalid").to_owned(),
            });
        }
        Ok(Self {
            fail_closed: spec["failurePolicy"].as_str() != Some("Ignore"),
            rules,
            match_conditions: named("matchConditions")?,
            variables: named("variables")?,
            validations,
            name,
            binding: binding_name,
            env,
        })
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn matches(&self, req: &AdmissionRequest<'_>) -> bool {
        let resource = if req.subresource.is_empty() {
            req.resource.to_owned()
        } else {
            format!("{}/{}", req.resource, req.subresource)
        };
        self.rules.iter().any(|r| {
            any_or(&r.groups, req.group)
                && any_or(&r.versions, req.version)
                && any_or(&r.operations, req.operation)
                && any_or(&r.resources, &resource)
        })
    }

    fn denial(&self, reason: &str, message: &str) -> Denial {
        let code = match reason {
            "Forbidden" => 403,
            "Unauthorized" => 401,
            "RequestEntityTooLarge" => 413,
            _ => 422,
        };
        Denial {
            code,
            reason: reason.to_owned(),
            message: format!(
                "ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {message}",
                self.name, self.binding
            ),
        }
    }

    /// Admits or denies one request; `Ok` when the policy does not apply.
    pub fn admit(&self, req: &AdmissionRequest<'_>) -> Result<(), Denial> {
        if !self.matches(req) {
            return Ok(());
        }
        let request = serde_json::json!({
            "operation": req.operation,
            "userInfo": req.user.to_json(),
            "resource": {"group": req.group, "version": req.version, "resource": req.resource},
            "subResource": req.subresource,
            "name": req.name,
            "namespace": req.namespace,
        });
        let mut context = Context::with_env(self.env.clone());
        context.add_variable_from_value("object", cel_value(req.object));
        context
            .add_variable_from_value("oldObject", req.old_object.map(cel_value).unwrap_or(cel::Value::Null));
        context.add_variable_from_value("request", cel_value(&request));
        context.add_variable_from_value("params", cel::Value::Null);
        let error = |what: &Compiled, e: String| -> Result<(), Denial> {
            if self.fail_closed {
                Err(self.denial("Forbidden", &format!("expression '{}' resulted in error: {e}", what.source)))
            } else {
                Ok(())
            }
        };
        let mut variables: HashMap<Key, cel::Value> = HashMap::new();
        context.add_variable_from_value("variables", variables.clone());
        for (name, compiled) in &self.variables {
            // A variable that fails stays unset: a validation using it fails in turn.
            if let Ok(value) = compiled.program.execute(&context) {
                variables.insert(Key::String(Arc::new(name.clone())), value);
                context.add_variable_from_value("variables", variables.clone());
            }
        }
        for (_, condition) in &self.match_conditions {
            match condition.program.execute(&context) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => return Ok(()),
                Ok(other) => return error(condition, format!("not a bool: {other:?}")),
                Err(e) => return error(condition, e.to_string()),
            }
        }
        for validation in &self.validations {
            match validation.expression.program.execute(&context) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => {
                    let built = validation.message_expression.as_ref().and_then(|m| {
                        match m.program.execute(&context) {
                            Ok(cel::Value::String(s)) if !s.is_empty() => Some(s.to_string()),
                            _ => None,
                        }
                    });
                    let message = built
                        .or_else(|| validation.message.clone())
                        .unwrap_or_else(|| format!("failed expression: {}", validation.expression.source));
                    return Err(self.denial(&validation.reason, &message));
                }
                Ok(other) => return error(&validation.expression, format!("not a bool: {other:?}")),
                Err(e) => return error(&validation.expression, e.to_string()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(expression: &str, object: Value) -> Result<cel::Value, String> {
        let env = Arc::new(Env::stdlib());
        let program = env.compile(expression).map_err(|e| e.to_string())?;
        let mut context = Context::with_env(env);
        context.add_variable_from_value("object", cel_value(&object));
        program.execute(&context).map_err(|e| e.to_string())
    }

    /// The CEL the chart's policy relies on, with what cel-go (kube-apiserver's CEL) answers:
    /// has() on a missing key, optional field and index access with orValue, macros on maps
    /// and lists, map and list equality, `in` on maps and lists, int JSON numbers.
    #[test]
    fn the_interpreter_answers_like_kubernetes_cel() {
        let object = json!({"spec": {"pool": {"10.0.0.1": {"eni": "eni-1"}}, "n": 3},
                            "extra": {"k": ["a"]}, "list": [{"t": "A"}, {"t": "B"}]});
        let table: &[(&str, cel::Value)] = &[
            ("has(object.spec.pool)", true.into()),
            ("has(object.spec.missing)", false.into()),
            ("object.spec.?missing.orValue(7)", 7.into()),
            ("object.?status.orValue({}) == {}", true.into()),
            ("object.extra[?'k'].orValue([]) == ['a']", true.into()),
            ("object.extra[?'absent'].orValue([]) == []", true.into()),
            ("object.?nothing.?deeper.orValue('x')", "x".into()),
            ("object.spec.pool.all(ip, ip.startsWith('10.'))", true.into()),
            ("'10.0.0.1' in object.spec.pool", true.into()),
            ("'ready' in ['ready', 'do-not-release']", true.into()),
            ("object.list.filter(c, c.t != 'A') == [{'t': 'B'}]", true.into()),
            ("object.list.exists(c, c.t == 'B')", true.into()),
            ("object.spec.n == 3", true.into()),
            ("size(object.spec.pool)", 1.into()),
            ("object.spec.pool == {'10.0.0.1': {'eni': 'eni-1'}}", true.into()),
            ("object.spec.pool == {'10.0.0.1': {'eni': 'eni-2'}}", false.into()),
        ];
        for (expression, want) in table {
            assert_eq!(&eval(expression, object.clone()).unwrap(), want, "{expression}");
        }
        // Selecting a missing field without has() or `?` is an error, as in Kubernetes.
        assert!(eval("object.spec.missing == 1", object.clone()).is_err());
        assert!(eval("object.extra['absent'] == []", object).is_err());
    }

    fn policy() -> AdmissionPolicy {
        let policy = json!({"metadata": {"name": "p"}, "spec": {
        "failurePolicy": "Fail",
        "matchConstraints": {"resourceRules": [{"apiGroups": ["g"], "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE"], "resources": ["things"]}]},
        "matchConditions": [{"name": "alice", "expression": "request.userInfo.username == 'alice'"}],
        "variables": [{"name": "n", "expression": "object.spec.n"},
                      {"name": "twice", "expression": "variables.n * 2"}],
        "validations": [
            {"expression": "variables.twice < 10", "messageExpression": "'too big: ' + string(variables.n)", "reason": "Forbidden"},
            {"expression": "object.spec.missing == 1"}
        ]}});
        let binding =
            json!({"metadata": {"name": "b"}, "spec": {"policyName": "p", "validationActions": ["Deny"]}});
        AdmissionPolicy::compile(&policy, &binding).unwrap()
    }

    fn request<'a>(object: &'a Value, user: &'a UserInfo, resource: &'a str) -> AdmissionRequest<'a> {
        AdmissionRequest {
            operation: "CREATE",
            group: "g",
            version: "v1",
            resource,
            subresource: "",
            name: "x",
            namespace: "",
            object,
            old_object: None,
            user,
        }
    }

    #[test]
    fn match_conditions_variables_messages_and_errors_decide_like_the_apiserver() {
        let policy = policy();
        let alice = UserInfo { username: "alice".into(), ..Default::default() };
        let big = json!({"spec": {"n": 7}});
        let denied = policy.admit(&request(&big, &alice, "things")).unwrap_err();
        assert_eq!(denied.code, 403);
        assert_eq!(
            denied.message,
            "ValidatingAdmissionPolicy 'p' with binding 'b' denied request: too big: 7"
        );
        // Not matched: another resource, another user.
        assert!(policy.admit(&request(&big, &alice, "others")).is_ok());
        assert!(policy.admit(&request(&big, &UserInfo::admin(), "things")).is_ok());
        // The second validation cannot evaluate: failurePolicy Fail denies.
        let small = json!({"spec": {"n": 1}});
        let denied = policy.admit(&request(&small, &alice, "things")).unwrap_err();
        assert!(
            denied.message.contains("expression 'object.spec.missing == 1' resulted in error"),
            "{denied:?}"
        );
        let fine = json!({"spec": {"n": 1, "missing": 1}});
        assert!(policy.admit(&request(&fine, &alice, "things")).is_ok());
    }

    #[test]
    fn an_expression_that_does_not_compile_is_named() {
        let policy =
            json!({"metadata": {"name": "p"}, "spec": {"validations": [{"expression": "object.("}]}});
        let binding =
            json!({"metadata": {"name": "b"}, "spec": {"policyName": "p", "validationActions": ["Deny"]}});
        let error = AdmissionPolicy::compile(&policy, &binding).err().expect("refused");
        assert!(error.contains("\"object.(\" does not compile"), "{error}");
    }
}
