//! Channel routing: which channels a kind of message goes to, from the settings.

use crate::config::{ChannelOverrides, Route, Settings};
use crate::core::event::{ChannelRef, Platform};

/// The channels a kind of message goes to, one per enabled platform that has one: the
/// environment's override when set, else the platform's key. Empty channel ids are skipped.
pub fn route(settings: &Settings, route: Route, env: Option<&str>) -> Vec<ChannelRef> {
    let pick = |o: &ChannelOverrides, approvals: &str, audit: &str, report: &str| {
        let (over, base) = match route {
            Route::Approvals => (&o.approvals_channel, approvals),
            Route::Audit => (&o.audit_channel, audit),
            Route::Report => (&o.report_channel, report),
        };
        over.as_deref()
            .filter(|c| !c.is_empty())
            .unwrap_or(base)
            .to_string()
    };
    let none = ChannelOverrides::default();
    let e = env.and_then(|n| settings.environments.get(n));
    let mut out = Vec::new();
    if settings.slack.enabled {
        let s = &settings.slack;
        let id = pick(
            e.map(|e| &e.slack).unwrap_or(&none),
            &s.approvals_channel,
            &s.audit_channel,
            &s.report_channel,
        );
        if !id.is_empty() {
            out.push(ChannelRef {
                platform: Platform::Slack,
                id,
            });
        }
    }
    if settings.discord.enabled {
        let d = &settings.discord;
        let id = pick(
            e.map(|e| &e.discord).unwrap_or(&none),
            &d.approvals_channel,
            &d.audit_channel,
            &d.report_channel,
        );
        if !id.is_empty() {
            out.push(ChannelRef {
                platform: Platform::Discord,
                id,
            });
        }
    }
    out
}
