//! The core's context: the [`Core`] struct (settings, identities, the ports and the wake-ups)
//! that the dispatcher, the commands and the services share, and [`UserError`], a refusal shown
//! to the person as is. Its behaviour lives in `dispatch/` and the files that add `impl Core`.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::Settings;
use crate::core::identity::Directory;
use crate::core::meter;
use crate::core::ports::{Clock, Facts, Reads, Store};

/// Shared state of the core: config, identities, store, clock, and wake-ups for the worker and
/// the outbox.
pub struct Core {
    /// Validated settings.
    pub settings: Arc<Settings>,
    /// Account -> operator.
    pub directory: Directory,
    /// State store.
    pub store: Arc<dyn Store>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Woken when an operation is queued.
    pub worker_wake: Arc<Notify>,
    /// Woken when a message is put in the outbox.
    pub outbox_wake: Arc<Notify>,
    /// Woken when a rehearsal is queued.
    pub rehearsal_wake: Arc<Notify>,
    /// Operations this process is running, including their final card update.
    pub in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// Plans and reports from the target's facts.
    pub facts: Arc<dyn Facts>,
    /// This core's name among the store's lease holders (`PID-RANDOM`, unique per core, so two
    /// cores in one process are two holders). Every lease it takes is held as
    /// [`Core::lease_holder`], and a graceful stop releases them all at once.
    pub instance: String,
    /// Deliveries this core saw lately, each with the request it created once there is one,
    /// so a repeated delivery can be told apart and answered with its request id.
    pub recent: std::sync::Mutex<crate::core::event::RecentDeliveries>,
}

impl Core {
    /// The read-only part of this context that plans and reports get through the [`Facts`] port.
    pub fn reads(&self) -> Reads<'_> {
        Reads {
            settings: &self.settings,
            store: self.store.as_ref(),
            clock: self.clock.as_ref(),
        }
    }
}

/// A user-facing refusal or mistake (shown as is), as opposed to an internal fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

impl Core {
    /// A core over `settings`, `store`, `clock` and `facts`, with fresh wake-ups.
    pub fn new(
        settings: Settings,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        facts: Arc<dyn Facts>,
    ) -> Core {
        meter::install();
        Core {
            directory: Directory::from_settings(&settings),
            settings: Arc::new(settings),
            store,
            clock,
            worker_wake: Arc::new(Notify::new()),
            outbox_wake: Arc::new(Notify::new()),
            rehearsal_wake: Arc::new(Notify::new()),
            in_flight: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            facts,
            instance: format!("{}-{:08x}", std::process::id(), rand::random::<u32>()),
            recent: std::sync::Mutex::new(Default::default()),
        }
    }

    /// The lease holder name of one of this core's roles (`scheduler`, `outbox`):
    /// `ROLE@INSTANCE`, which `Tx::release_leases(&core.instance)` releases.
    pub fn lease_holder(&self, role: &str) -> String {
        format!("{role}@{}", self.instance)
    }
}
