//! The `platform:service/http-route` capability: the component names the entry of its route
//! table that matched the request, and the host uses it as `http.route` (under the component's
//! prefix) in the request's span name and metric labels, instead of the path, which may hold ids.
//!
//! The component is not trusted with label values: a template is taken only if it matches the
//! request's path segment by segment (a `{name}` segment matches any one), and each component
//! may name at most [`MAX_ROUTES`] distinct templates over its life; later ones are ignored,
//! with one warning. So a component cannot make span names or metric series without bound.
//!
//! - [`Routes`] is built once per component and keeps the templates seen.
//! - [`RouteCtx`] is created per store: the path being served and the route named for it.
//! - [`Route`] is the view the generated `Host` trait is implemented on.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use wasmtime::component::{HasData, Linker};

use crate::bindings::http_route as wit;

/// Distinct routes one component may name.
pub const MAX_ROUTES: usize = 32;

/// Longest template taken, in bytes.
const MAX_TEMPLATE: usize = 256;

/// The routes one component has named, with its prefix, built once.
#[derive(Debug)]
pub struct Routes {
    component: String,
    /// The component's path prefix, such as `/orders`.
    prefix: String,
    /// Full routes (prefix and template) named so far; shared with every request's span.
    seen: Mutex<HashSet<Arc<str>>>,
    /// Set once a template was refused for being one too many, so that is logged once.
    full_warned: AtomicBool,
}

impl Routes {
    /// No routes named yet, for `component` served under `prefix`.
    pub fn new(component: &str, prefix: &str) -> Self {
        Self {
            component: component.to_owned(),
            prefix: prefix.to_owned(),
            seen: Mutex::default(),
            full_warned: AtomicBool::new(false),
        }
    }

    /// The full route for `template`, if it matches `path` and there is room for it.
    fn take(&self, template: &str, path: &str) -> Option<Arc<str>> {
        if template.len() > MAX_TEMPLATE || !matches(template, path) {
            return None;
        }
        let route = format!("{}{}", self.prefix, template.trim_end_matches('/'));
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = seen.get(route.as_str()) {
            return Some(known.clone());
        }
        if seen.len() >= MAX_ROUTES {
            if !self.full_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    component = %self.component,
                    "the component named more than {MAX_ROUTES} routes; later ones are not used in \
                     spans or metrics"
                );
            }
            return None;
        }
        let route: Arc<str> = route.into();
        seen.insert(route.clone());
        Some(route)
    }
}

/// Whether `template` (`/orders/{id}`) matches `path` (`/orders/42`), segment by segment.
fn matches(template: &str, path: &str) -> bool {
    if !template.starts_with('/') {
        return false;
    }
    let mut wanted = template.trim_end_matches('/').split('/');
    let mut given = path.trim_end_matches('/').split('/');
    loop {
        match (wanted.next(), given.next()) {
            (None, None) => return true,
            (Some(want), Some(got)) => {
                let placeholder = want.len() > 2 && want.starts_with('{') && want.ends_with('}');
                let literal = !want.contains(['{', '}']) && want == got;
                if !(placeholder && !got.is_empty() || literal) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// The route side of one unit of work.
#[derive(Debug)]
pub struct RouteCtx {
    routes: Arc<Routes>,
    /// The path the component sees, while it serves an HTTP request.
    path: Option<String>,
    /// What it named, if it matched.
    matched: Option<Arc<str>>,
}

impl RouteCtx {
    /// The route side of a new store: no path served yet, no route named.
    pub fn new(routes: Arc<Routes>) -> Self {
        Self {
            routes,
            path: None,
            matched: None,
        }
    }

    /// The unit of work serves an HTTP request for `path` (the prefix already stripped).
    pub fn serving(&mut self, path: &str) {
        self.path = Some(path.to_owned());
    }

    /// The route the component named for the request, under its prefix.
    pub fn matched(&self) -> Option<&Arc<str>> {
        self.matched.as_ref()
    }
}

/// The view of a store's [`RouteCtx`] that the generated bindings call into, for one call.
pub struct Route<'a> {
    ctx: &'a mut RouteCtx,
}

impl<'a> Route<'a> {
    /// The view over `ctx`, borrowed for as long as the guest's call lasts.
    pub fn new(ctx: &'a mut RouteCtx) -> Self {
        Self { ctx }
    }
}

impl wit::Host for Route<'_> {
    async fn matched(&mut self, template: String) -> wasmtime::Result<()> {
        let Some(path) = &self.ctx.path else {
            return Ok(());
        };
        match self.ctx.routes.take(&template, path) {
            Some(route) => self.ctx.matched = Some(route),
            None => {
                tracing::debug!(
                    %template,
                    %path,
                    "a route that does not match the path was ignored"
                )
            }
        }
        Ok(())
    }
}

struct HasRoute;

impl HasData for HasRoute {
    type Data<'a> = Route<'a>;
}

/// Adds `platform:service/http-route` to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> Route<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasRoute>(linker, view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_matches_a_path_segment_by_segment() {
        assert!(matches("/orders/{id}", "/orders/42"));
        assert!(matches("/orders", "/orders/"));
        assert!(matches("/health", "/health"));
        assert!(!matches("/orders/{id}", "/orders"));
        assert!(!matches("/orders/{id}", "/orders/42/lines"));
        assert!(!matches("/orders/{id}", "/orders//"));
        assert!(!matches("/invoices/{id}", "/orders/42"));
        assert!(!matches("orders", "orders"));
        assert!(
            !matches("/orders/{}", "/orders/42"),
            "a placeholder has a name"
        );
        assert!(
            !matches("/orders/x{id}", "/orders/x{id}"),
            "braces are never literal"
        );
    }

    #[test]
    fn the_full_route_has_the_prefix_and_a_component_cannot_name_routes_without_bound() {
        let routes = Routes::new("orders", "/orders");
        assert_eq!(
            routes.take("/orders/{id}", "/orders/42").as_deref(),
            Some("/orders/orders/{id}")
        );
        assert_eq!(
            routes.take("/orders/42", "/orders/42").as_deref(),
            Some("/orders/orders/42")
        );
        for n in 0..(2 * MAX_ROUTES) {
            let path = format!("/orders/{n}");
            routes.take(&path, &path);
        }
        assert_eq!(routes.seen.lock().unwrap().len(), MAX_ROUTES);
        assert_eq!(
            routes.take("/orders/{id}", "/orders/7").as_deref(),
            Some("/orders/orders/{id}"),
            "a known route is still taken"
        );
        assert_eq!(routes.take("/orders/{x}/{y}", "/orders/7/8"), None);
    }
}
