//! Framework authentication and authorization, in the spirit of Mesos's: credentials
//! (`--credentials FILE`: principal + secret) checked on SUBSCRIBE, and ACLs (`--acls FILE`) saying
//! which principals may register frameworks in which roles and who may tear down whose
//! frameworks. Pure: the shell reads the files and the request's credentials and calls these.
//!
//! ```json
//! {"credentials": [{"principal": "services", "secret": "s3cret"}]}
//! {"permissive": false,
//!  "register_frameworks": [{"principals": {"values": ["services"]}, "roles": {"values": ["web", "*"]}}],
//!  "teardown_frameworks": [{"principals": {"values": ["ops"]}, "framework_principals": {"type": "ANY"}}]}
//! ```
//! Rules are tried in order; the first whose subjects and objects both match decides (allow).
//! When none matches, `permissive` decides (default true, as in Mesos).

use agora_net::http_auth::constant_time_eq;
use serde::Deserialize;

use crate::error::MasterError;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Credential {
    pub principal: String,
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct Credentials {
    #[serde(default)]
    pub credentials: Vec<Credential>,
}

/// Who or what a rule is about: listed values, or `{"type": "ANY"}` / `{"type": "NONE"}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct Entity {
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

impl Entity {
    fn matches(&self, v: &str) -> bool {
        match self.kind.as_deref() {
            Some("ANY") => true,
            Some("NONE") => false,
            _ => self.values.iter().any(|x| x == v),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RegisterRule {
    pub principals: Entity,
    pub roles: Entity,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TeardownRule {
    pub principals: Entity,
    pub framework_principals: Entity,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Acls {
    #[serde(default = "yes")]
    pub permissive: bool,
    #[serde(default)]
    pub register_frameworks: Vec<RegisterRule>,
    #[serde(default)]
    pub teardown_frameworks: Vec<TeardownRule>,
}

impl Default for Acls {
    fn default() -> Self {
        Acls {
            permissive: true,
            register_frameworks: Vec::new(),
            teardown_frameworks: Vec::new(),
        }
    }
}

/// Decodes `Basic base64(principal:secret)`.
pub fn basic(header: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let encoded = header.strip_prefix("Basic ")?.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (p, s) = text.split_once(':')?;
    Some((p.to_string(), s.to_string()))
}

impl Credentials {
    /// Checks a principal and secret.
    ///
    /// # Errors
    /// [`MasterError::Unauthenticated`] saying what is missing or wrong.
    pub fn authenticate(&self, given: Option<(String, String)>) -> Result<String, MasterError> {
        let Some((principal, secret)) = given else {
            return Err(MasterError::Unauthenticated(
                "this master requires framework credentials: send `authorization: Basic base64(principal:secret)`"
                    .into(),
            ));
        };
        let ok = self
            .credentials
            .iter()
            .filter(|c| c.principal == principal)
            .fold(false, |found, c| {
                found | constant_time_eq(c.secret.as_bytes(), secret.as_bytes())
            });
        if ok {
            Ok(principal)
        } else {
            Err(MasterError::Unauthenticated(format!(
                "the credentials of principal '{principal}' were rejected"
            )))
        }
    }
}

impl Acls {
    /// May `principal` register a framework in each of `roles`?
    ///
    /// # Errors
    /// [`MasterError::PermissionDenied`] naming the principal and the first refused role.
    pub fn may_register(&self, principal: &str, roles: &[String]) -> Result<(), MasterError> {
        for role in roles {
            let rule = self
                .register_frameworks
                .iter()
                .find(|r| r.principals.matches(principal) && r.roles.matches(role));
            let allowed = rule.map_or(self.permissive, |_| true);
            if !allowed {
                return Err(MasterError::PermissionDenied(format!(
                    "principal '{principal}' may not register frameworks in role '{role}' (acls: register_frameworks)"
                )));
            }
        }
        Ok(())
    }

    /// May `principal` tear down a framework registered by `framework_principal`?
    ///
    /// # Errors
    /// [`MasterError::PermissionDenied`].
    pub fn may_teardown(
        &self,
        principal: &str,
        framework_principal: &str,
    ) -> Result<(), MasterError> {
        let rule = self.teardown_frameworks.iter().find(|r| {
            r.principals.matches(principal) && r.framework_principals.matches(framework_principal)
        });
        if rule.map_or(self.permissive, |_| true) {
            Ok(())
        } else {
            Err(MasterError::PermissionDenied(format!(
                "principal '{principal}' may not tear down frameworks of principal '{framework_principal}' (acls: teardown_frameworks)"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acls() -> Acls {
        serde_json::from_str(
            r#"{"permissive": false,
                "register_frameworks": [{"principals": {"values": ["services"]}, "roles": {"values": ["web", "*"]}},
                                        {"principals": {"type": "ANY"}, "roles": {"values": ["scratch"]}}],
                "teardown_frameworks": [{"principals": {"values": ["ops"]}, "framework_principals": {"type": "ANY"}}]}"#,
        )
        .expect("acls")
    }

    #[test]
    fn register_rules_are_tried_in_order_and_the_default_is_permissive_unless_said() {
        let a = acls();
        assert!(a.may_register("services", &["web".into()]).is_ok());
        assert!(a.may_register("anyone", &["scratch".into()]).is_ok());
        let err = a.may_register("batch", &["web".into()]).unwrap_err();
        assert!(
            err.to_string()
                .contains("principal 'batch' may not register frameworks in role 'web'"),
            "{err}"
        );
        assert!(Acls::default().may_register("x", &["y".into()]).is_ok());
    }

    #[test]
    fn teardown_rules() {
        let a = acls();
        assert!(a.may_teardown("ops", "services").is_ok());
        assert!(a.may_teardown("services", "batch").is_err());
    }

    #[test]
    fn credentials_and_basic_headers() {
        let c: Credentials =
            serde_json::from_str(r#"{"credentials":[{"principal":"services","secret":"s3cret"}]}"#)
                .expect("creds");
        // base64("services:s3cret")
        let given = basic("Basic c2VydmljZXM6czNjcmV0");
        assert_eq!(c.authenticate(given), Ok("services".to_string()));
        assert!(c
            .authenticate(Some(("services".into(), "nope".into())))
            .is_err());
        assert!(c
            .authenticate(None)
            .unwrap_err()
            .to_string()
            .contains("requires framework credentials"));
        assert_eq!(basic("Bearer x"), None);
        // Compared whole (with agora-net's constant-time comparison): no prefix, no extension.
        for near in ["s3cre", "s3cret!", "", "S3cret"] {
            assert!(c
                .authenticate(Some(("services".into(), near.into())))
                .is_err());
        }
        // A principal listed twice: any of its secrets.
        let twice: Credentials = serde_json::from_str(
            r#"{"credentials":[{"principal":"a","secret":"one"},{"principal":"a","secret":"two"}]}"#,
        )
        .expect("creds");
        assert!(twice.authenticate(Some(("a".into(), "two".into()))).is_ok());
    }
}
