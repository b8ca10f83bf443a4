//! The app status: the `app_status` command's result, as a `status` field and as the
//! `app status ENV` report.

use std::time::Duration;

use super::{field, Field};
use crate::core::ports::Reads;
use crate::core::reply::{Reply, Report, Section};
use crate::dbops;

/// The app status command's result, or why there is none; `None` for an unknown environment.
pub async fn app_field(reads: Reads<'_>, env: &str) -> Option<Field> {
    let e = crate::services::environment::env_settings(reads, env).ok()?;
    let Some(argv) = &e.app_status else {
        return Some(field(
            "app",
            format!(
                "unknown (environments.{env}.app_status is not set; dualkey {} the app in {env})",
                if e.controls_app() {
                    "can still stop and start"
                } else {
                    "does not stop or start"
                }
            ),
        ));
    };
    let timeout = Duration::from_secs(e.app_timeout_secs.min(10));
    Some(field(
        "app",
        match dbops::app::run(argv, timeout).await {
            Ok(o) if o.ok() => dbops::app::tail_of(&o.tail, 200),
            Ok(o) => format!(
                "status command exited {}: {}",
                o.code.map(|c| c.to_string()).unwrap_or("by signal".into()),
                dbops::app::tail_of(&o.tail, 200)
            ),
            Err(err) => err.to_string(),
        },
    ))
}

/// `app status ENV` as a report.
pub async fn app_report(reads: Reads<'_>, env: &str) -> Reply {
    Reply::report(Report {
        title: format!("app in {env}"),
        sections: vec![Section {
            fields: app_field(reads, env).await.into_iter().collect(),
            ..Section::default()
        }],
        buttons: vec![],
    })
}
