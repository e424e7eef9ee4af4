//! The server pieces the async targets drive: one tokio runtime, one embedded-mode node (its HTTP router)
//! and embedded-mode applications (a fresh one every [`APP_INPUTS`] inputs), with the default config.

use std::sync::{Arc, OnceLock};

use axum::Router;
use tidings::app::{Backend, Tidings};
use tidings::config::Config;
use tidings::hub::Hub;
use tidings::recovery::MemorySessionStore;

/// HS256 secret of the fuzzed node.
pub const SECRET: &str = "fuzz-secret-fuzz-secret-fuzz-secret";
/// API key of the fuzzed node.
pub const API_KEY: &str = "fuzz-key-fuzz-key-fuzz-key";

/// The default config with the secrets set: every limit is the one a default deployment has.
pub fn config() -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("a socket address"),
        ..Config::default()
    };
    config.auth.jwt_secret = SECRET.into();
    config.api.keys = vec![API_KEY.into()];
    config
}

/// A single-threaded runtime shared by every input; spawned tasks run while an input is driven.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// The HTTP router of an embedded node built by `tidings::server::build`, exactly as `serve` builds it; a fresh
/// node every [`APP_INPUTS`] inputs, for the reason [`app`] gives.
pub fn router() -> Router {
    thread_local! {
        static ROUTER: std::cell::RefCell<Option<(Router, usize)>> = const { std::cell::RefCell::new(None) };
    }
    ROUTER.with(|slot| {
        renewed(slot, || {
            let _guard = runtime().enter();
            let local = "127.0.0.1:3000".parse().expect("a socket address");
            tidings::server::build(&config(), local)
                .expect("the default config builds a node")
                .router
        })
    })
}

/// Inputs one application serves before the next one replaces it.
pub const APP_INPUTS: usize = 500;

/// The value kept in `slot`, or a fresh one from `make` once the kept one served [`APP_INPUTS`] inputs.
fn renewed<T: Clone>(slot: &std::cell::RefCell<Option<(T, usize)>>, make: impl FnOnce() -> T) -> T {
    let mut slot = slot.borrow_mut();
    if let Some((value, served)) = slot.as_mut().filter(|(_, served)| *served < APP_INPUTS) {
        *served += 1;
        return value.clone();
    }
    let value = make();
    *slot = Some((value.clone(), 1));
    value
}

/// An embedded-mode application with the default limits, as `tidings::server::build` assembles it. A fresh one
/// every [`APP_INPUTS`] inputs: what an application keeps between inputs (history streams of every room
/// published to, kept while recent) would otherwise pile up over millions of inputs until one table's growth
/// passes the allocation cap, which is there to catch what one input makes the node allocate.
pub fn app() -> Arc<Tidings> {
    thread_local! {
        static APP: std::cell::RefCell<Option<(Arc<Tidings>, usize)>> = const { std::cell::RefCell::new(None) };
    }
    APP.with(|slot| renewed(slot, new_app))
}

fn new_app() -> Arc<Tidings> {
    // The application starts its token-expiry task on the runtime.
    let _guard = runtime().enter();
    let config = config();
    let hub = Arc::new(Hub::new(tidings::server::memory_history(&config)));
    let backend = Backend::local(hub.clone(), Arc::new(MemorySessionStore::new()));
    let direct = tidings::server::memory_direct(&config);
    let parts =
        tidings::server::app_parts(&config, hub, backend, direct).expect("the default config");
    Tidings::new(parts)
}
