//! What each route needs, declared where the route is declared. [`Routes::route`] takes the
//! path, the method, the [`RoutePolicy`] and the handler together, so a route cannot be added
//! without saying which permission it needs: there is no open default. The policy also says
//! whether the route is audited, whether it submits scans (its refusals count in
//! `scan_submissions_rejected_total`) and what its body is. The [`declare`] middleware hands the
//! matched route's policy to every layer inside it (audit trail, same-origin checks, access, body
//! size), which read it with [`policy_of`] instead of matching path strings.
//!
//! A request no route serves (unknown path: 404) needs role `read`, like every other refusal
//! before the router answers. A method a path does not serve (405) is checked as the path's
//! `GET` route, or as needing role `read` when the path has none.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, State};
use axum::handler::Handler;
use axum::http::{Method, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{on, MethodFilter};
use axum::Router;

use super::AppState;
use crate::auth::Permission;
use crate::config::MetricsAuth;
use crate::storage::audit::AuditAction;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Liveness and readiness probes: open, never rate limited.
    Probe,
    /// Anyone (the OpenAPI document).
    Nothing,
    /// `/metrics` and `/stats`: anyone with `METRICS_AUTH=open`, else a token with
    /// [`Permission::Scrape`].
    Metrics,
    /// A token whose role has this permission (scoped to its workspaces by the handlers).
    Token(Permission),
}

/// What a route's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// JSON (or none), bounded by `MAX_BODY_BYTES`.
    Json,
    /// A multipart archive upload, bounded by the archive size limit.
    Archive,
}

/// Everything the middleware needs to know about a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutePolicy {
    pub need: Need,
    /// The audited action, for routes that change state.
    pub audit: Option<AuditAction>,
    /// Whether the route submits scans.
    pub submits: bool,
    pub body: BodyKind,
}

impl RoutePolicy {
    /// The policy of a request no route serves.
    pub const UNROUTED: RoutePolicy = RoutePolicy::new(Need::Token(Permission::Read));

    /// A route that needs `need`, is not audited, submits nothing and takes a JSON body.
    pub const fn new(need: Need) -> RoutePolicy {
        RoutePolicy {
            need,
            audit: None,
            submits: false,
            body: BodyKind::Json,
        }
    }

    /// A token with `permission`.
    pub const fn token(permission: Permission) -> RoutePolicy {
        RoutePolicy::new(Need::Token(permission))
    }

    /// Records every request in the audit trail as `action`.
    pub const fn audited(self, action: AuditAction) -> RoutePolicy {
        RoutePolicy {
            audit: Some(action),
            ..self
        }
    }

    /// Submits scans.
    pub const fn submits(self) -> RoutePolicy {
        RoutePolicy {
            submits: true,
            ..self
        }
    }

    /// Takes a multipart archive upload.
    pub const fn archive_body(self) -> RoutePolicy {
        RoutePolicy {
            body: BodyKind::Archive,
            ..self
        }
    }

    /// The permission a request needs under `metrics_auth`; `None` when the route is open.
    pub fn permission(&self, metrics_auth: MetricsAuth) -> Option<Permission> {
        match self.need {
            Need::Probe | Need::Nothing => None,
            Need::Metrics => (metrics_auth == MetricsAuth::Token).then_some(Permission::Scrape),
            Need::Token(permission) => Some(permission),
        }
    }
}

impl From<Need> for RoutePolicy {
    fn from(need: Need) -> RoutePolicy {
        RoutePolicy::new(need)
    }
}

impl From<Permission> for RoutePolicy {
    fn from(permission: Permission) -> RoutePolicy {
        RoutePolicy::token(permission)
    }
}

/// The policy of the route a request matched, as [`declare`] attached it;
/// [`RoutePolicy::UNROUTED`] when the request did not pass through it.
pub fn policy_of<B>(req: &Request<B>) -> RoutePolicy {
    req.extensions()
        .get::<RoutePolicy>()
        .copied()
        .unwrap_or(RoutePolicy::UNROUTED)
}

/// One declared route.
#[derive(Debug, Clone)]
pub struct DeclaredRoute {
    pub method: Method,
    /// The route template, as `MatchedPath` reports it.
    pub path: &'static str,
    pub policy: RoutePolicy,
}

/// The router under construction and the policy of each of its routes.
pub struct Routes {
    router: Router<AppState>,
    declared: Vec<DeclaredRoute>,
    /// The body limit of [`BodyKind::Archive`] routes, in bytes.
    archive_limit: usize,
}

impl Routes {
    pub fn new(archive_limit: usize) -> Routes {
        Routes {
            router: Router::new(),
            declared: Vec::new(),
            archive_limit,
        }
    }

    /// Serves `method path` with `handler` under `policy`.
    pub fn route<H, T>(
        mut self,
        path: &'static str,
        method: Method,
        policy: impl Into<RoutePolicy>,
        handler: H,
    ) -> Routes
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let policy = policy.into();
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|_| panic!("axum cannot route method {method}"));
        assert!(
            !self
                .declared
                .iter()
                .any(|r| r.path == path && r.method == method),
            "{method} {path} is declared twice"
        );
        let mut endpoint = on(filter, handler);
        if policy.body == BodyKind::Archive {
            endpoint = endpoint.layer(DefaultBodyLimit::max(self.archive_limit));
        }
        self.router = self.router.route(path, endpoint);
        self.declared.push(DeclaredRoute {
            method,
            path,
            policy,
        });
        self
    }

    /// Every route declared so far.
    pub fn declared(&self) -> &[DeclaredRoute] {
        &self.declared
    }

    /// The router, and the table [`declare`] reads.
    pub fn finish(self) -> (Router<AppState>, RouteTable) {
        let table = RouteTable::new(&self.declared);
        (self.router, table)
    }
}

/// The policy of every (method, route template), and of the methods each path does not serve.
#[derive(Debug, Clone)]
pub struct RouteTable(Arc<Table>);

#[derive(Debug)]
struct Table {
    routes: HashMap<(Method, &'static str), RoutePolicy>,
    unserved: HashMap<&'static str, RoutePolicy>,
}

impl RouteTable {
    pub fn new(declared: &[DeclaredRoute]) -> RouteTable {
        let routes = declared
            .iter()
            .map(|r| ((r.method.clone(), r.path), r.policy))
            .collect();
        let mut unserved: HashMap<&'static str, RoutePolicy> = HashMap::new();
        for r in declared {
            let fallback = unserved.entry(r.path).or_insert(RoutePolicy::UNROUTED);
            if r.method == Method::GET {
                fallback.need = r.policy.need;
            }
            if r.policy.body == BodyKind::Archive {
                fallback.body = BodyKind::Archive;
            }
        }
        RouteTable(Arc::new(Table { routes, unserved }))
    }

    /// The policy of `method` on the route template `path` (`None`: no route matched).
    pub fn policy(&self, method: &Method, path: Option<&str>) -> RoutePolicy {
        let Some(path) = path else {
            return RoutePolicy::UNROUTED;
        };
        let table = &self.0;
        let declared = |m: &Method| table.routes.get(&(m.clone(), path)).copied();
        // axum answers HEAD with the GET handler.
        let head_as_get = || {
            (*method == Method::HEAD)
                .then(|| declared(&Method::GET))
                .flatten()
        };
        declared(method)
            .or_else(head_as_get)
            .or_else(|| table.unserved.get(path).copied())
            .unwrap_or(RoutePolicy::UNROUTED)
    }
}

/// Attaches the matched route's [`RoutePolicy`] to the request, for the layers inside this one.
pub async fn declare(
    State(table): State<RouteTable>,
    mut req: Request<Body>,
    next: Next,
) -> Response {
    let path = req.extensions().get::<MatchedPath>().map(|p| p.as_str());
    let policy = table.policy(req.method(), path);
    req.extensions_mut().insert(policy);
    next.run(req).await
}
