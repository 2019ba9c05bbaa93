//! ColonyServer manifests the end-to-end tests share: one place for the shapes every test
//! writes, each test choosing only what it is about (health, fallback, extra spec lines).

/// Fast probing for tests: a probe a second, one failure and one success decide.
pub const FAST_HEALTH: &str = "{interval: 1s, timeout: 1s, failureThreshold: 1, successThreshold: 1}";

/// An unmanaged ColonyServer probed at `url`. `health` is a YAML flow mapping (e.g.
/// [`FAST_HEALTH`]); `extra` is more `spec` lines, each indented by two spaces, or "".
pub fn unmanaged_server(name: &str, url: &str, health: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: colony.zyeute.io/v1alpha1
kind: ColonyServer
metadata:
  name: {name}
spec:
  managed: false
  endpoint: {url}
  health: {health}
{extra}"#
    )
}

/// A managed ColonyServer running `image`, probed at `url`, with its database and server-key
/// Secrets (`<name>-db`, `<name>-key`). `health` and `extra` as in [`unmanaged_server`].
pub fn managed_server(name: &str, url: &str, image: &str, health: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: {name}-db
stringData:
  username: colonies
  password: not-a-real-password
---
apiVersion: v1
kind: Secret
metadata:
  name: {name}-key
stringData:
  prvkey: 6d2fb6f546bc1b4e0b8a5b3e5e3d1f8a4b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e
---
apiVersion: colony.zyeute.io/v1alpha1
kind: ColonyServer
metadata:
  name: {name}
spec:
  image: {image}
  endpoint: {url}
  database:
    host: postgres.example
    user: {{name: {name}-db, key: username}}
    password: {{name: {name}-db, key: password}}
  serverKeySecretRef: {{name: {name}-key, key: prvkey}}
  health: {health}
{extra}"#
    )
}

/// Health of the server the bees' tests share: a probe a second, two failures decide.
pub const BEE_SERVER_HEALTH: &str = "{interval: 1s, timeout: 1s, failureThreshold: 2, successThreshold: 1}";

/// What a FinanceBee test needs around its bee: the unmanaged ColonyServer `srv` probed at
/// `url`, and the executor key Secret `bee-key` (a fixed test key).
pub fn bee_surroundings(url: &str) -> String {
    format!(
        r#"{server}
---
apiVersion: v1
kind: Secret
metadata:
  name: bee-key
stringData:
  prvkey: "{key}"
"#,
        server = unmanaged_server("srv", url, BEE_SERVER_HEALTH, ""),
        key = "1".repeat(64)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_are_valid_yaml_with_the_chosen_fields() {
        let u: serde_yaml::Value = serde_yaml::from_str(&unmanaged_server(
            "a",
            "http://127.0.0.1:1",
            FAST_HEALTH,
            "  fallback: {minHold: 1s}\n",
        ))
        .unwrap();
        assert_eq!(u["spec"]["managed"], serde_yaml::Value::Bool(false));
        assert_eq!(u["spec"]["fallback"]["minHold"].as_str(), Some("1s"));
        assert_eq!(u["spec"]["health"]["interval"].as_str(), Some("1s"));
        let docs: Vec<serde_yaml::Value> =
            serde_yaml::Deserializer::from_str(&managed_server("b", "http://127.0.0.1:1", "img:1", FAST_HEALTH, ""))
                .map(|d| serde::Deserialize::deserialize(d).unwrap())
                .collect();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[2]["spec"]["image"].as_str(), Some("img:1"));
        assert_eq!(docs[2]["spec"]["serverKeySecretRef"]["name"].as_str(), Some("b-key"));
    }
}
