//! LISTEN/NOTIFY: one task per replica turns `NOTIFY dmpushd_wakeup` into [`Store::wakeup`]
//! signals and `NOTIFY dmpushd_devices` (sent by the trigger of `migrations/postgres/0002`) into
//! device-cache invalidations; while it is disconnected the cache is off.
//!
//! [`Store::wakeup`]: crate::store::Store::wakeup

use std::{sync::Arc, time::Duration};

use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{DEVICES_CHANNEL, WAKEUP_CHANNEL};
use crate::store::DeviceCache;

/// Turns NOTIFY from any replica into local wake-ups and device-cache invalidations;
/// reconnects after connection loss.
pub(super) async fn listen(
    pool: PgPool,
    wake: Arc<Notify>,
    devices: Arc<DeviceCache>,
    stop: CancellationToken,
) {
    loop {
        let attempt = async {
            let mut l = PgListener::connect_with(&pool).await?;
            l.listen_all([WAKEUP_CHANNEL, DEVICES_CHANNEL]).await?;
            // Notifications sent while we were not listening are lost: look once, and forget
            // every device (the cache was off meanwhile, but may hold entries from before).
            devices.reset(true);
            wake.notify_one();
            // `try_recv`, not `recv`: `recv` reconnects silently and would hide the gap in
            // which invalidations were lost.
            while let Some(n) = l.try_recv().await? {
                if n.channel() == DEVICES_CHANNEL {
                    invalidate(&devices, n.payload());
                } else {
                    wake.notify_one();
                }
            }
            Err::<(), sqlx::Error>(sqlx::Error::Protocol("LISTEN connection closed".into()))
        };
        let r = tokio::select! {
            _ = stop.cancelled() => return,
            r = attempt => r,
        };
        devices.reset(false);
        if let Err(e) = r {
            tracing::warn!(error = %e, "LISTEN failed; polling and uncached device reads until reconnected");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Applies one `dmpushd_devices` payload; anything unexpected clears the whole cache (safe).
fn invalidate(devices: &DeviceCache, payload: &str) {
    match serde_json::from_str::<(String, String)>(payload) {
        Ok((tenant, id)) => devices.invalidate(&tenant, &id),
        Err(_) => {
            if payload != "*" {
                tracing::warn!(
                    payload,
                    "unexpected device notification; clearing the device cache"
                );
            }
            devices.reset(true);
        }
    }
}
