//! Which methods a path accepts, so a 405 can say so in `Allow` (RFC 9110 §15.5.6).
//!
//! actix's resource map knows a path exists but not its methods, so the table is made when
//! the server is built: the routes of the service's OpenAPI document, the platform's own,
//! and whatever the service serves but leaves out of its document ([`UnlistedRoutes`]).

use actix_web::dev::ResourceDef;
use actix_web::http::Method;

/// Routes a service serves but leaves out of its OpenAPI document (`/internal/**`): put in
/// its app data (`cfg.app_data(web::Data::new(UnlistedRoutes::new(…)))`) so a wrong method
/// on them also gets its `Allow`.
pub struct UnlistedRoutes(RouteMethods);

impl UnlistedRoutes {
    pub fn new(routes: &[(&str, Method)]) -> Self {
        Self(RouteMethods::new(
            routes.iter().map(|(p, m)| ((*p).to_owned(), m.clone())),
        ))
    }

    pub(super) fn table(&self) -> &RouteMethods {
        &self.0
    }
}

/// (path pattern, method) pairs, matched the way actix matches them.
pub(super) struct RouteMethods(Vec<(ResourceDef, Method)>);

impl RouteMethods {
    pub(super) fn new(routes: impl IntoIterator<Item = (String, Method)>) -> Self {
        Self(
            routes
                .into_iter()
                .map(|(path, method)| (ResourceDef::new(path), method))
                .collect(),
        )
    }

    /// The methods `path` accepts, in a stable order, without repeats.
    pub(super) fn allowed(&self, path: &str) -> Vec<Method> {
        let mut methods: Vec<Method> = Vec::new();
        for (def, method) in &self.0 {
            if def.is_match(path) && !methods.contains(method) {
                methods.push(method.clone());
            }
        }
        methods.sort_by_key(|m| m.as_str().to_owned());
        methods
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_matches_like_the_router() {
        let t = RouteMethods::new([
            ("/api/things".to_owned(), Method::GET),
            ("/api/things".to_owned(), Method::POST),
            ("/api/things/{id}".to_owned(), Method::DELETE),
        ]);
        assert_eq!(t.allowed("/api/things"), [Method::GET, Method::POST]);
        assert_eq!(t.allowed("/api/things/7"), [Method::DELETE]);
        assert!(t.allowed("/api/things/7/x").is_empty());
        assert!(t.allowed("/api/other").is_empty());
    }
}
