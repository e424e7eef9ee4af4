//! The server pieces the async targets drive: one tokio runtime, one embedded-mode node (its HTTP router)
//! and one embedded-mode application, each built once per fuzzing process with the default config.

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

/// The HTTP router of an embedded node built by `tidings::server::build`, exactly as `serve` builds it.
pub fn router() -> Router {
    static ROUTER: OnceLock<Router> = OnceLock::new();
    ROUTER
        .get_or_init(|| {
            let _guard = runtime().enter();
            let local = "127.0.0.1:3000".parse().expect("a socket address");
            tidings::server::build(&config(), local)
                .expect("the default config builds a node")
                .router
        })
        .clone()
}

/// An embedded-mode application with the default limits, as `tidings::server::build` assembles it.
pub fn app() -> Arc<Tidings> {
    static APP: OnceLock<Arc<Tidings>> = OnceLock::new();
    APP.get_or_init(|| {
        // The application starts its token-expiry task on the runtime.
        let _guard = runtime().enter();
        let config = config();
        let hub = Arc::new(Hub::new(tidings::server::memory_history(&config)));
        let backend = Backend::local(hub.clone(), Arc::new(MemorySessionStore::new()));
        let direct = tidings::server::memory_direct(&config);
        let parts =
            tidings::server::app_parts(&config, hub, backend, direct).expect("the default config");
        Tidings::new(parts)
    })
    .clone()
}
