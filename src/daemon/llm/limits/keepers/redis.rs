//! The limits in Redis, shared by every daemon: GCRA buckets (the algorithm governor uses
//! locally), one key per bucket holding its theoretical arrival time in microseconds of the
//! Redis server's clock, and one Lua script per decision, so that a request's RPM and TPM
//! are taken together or not at all, atomically across daemons.

use std::time::Duration;

use ::redis::Script;
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;

use super::{LimitError, LimitFuture, Limiter, Quotas, token_burst};

/// One decision over several buckets (KEYS), each with ARGV `interval_us, tau_us, n`, and a
/// last ARGV `take` (all or nothing; the reply is 0, or the microseconds to wait) or
/// `charge` (always applied). The clock is the Redis server's (`TIME`), so daemons' clocks
/// do not matter. Keys expire once their bucket is full again.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local mode = ARGV[#ARGV]
local wait = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3 * i - 2])
  local tau = tonumber(ARGV[3 * i - 1])
  local n = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval * n
  local allowed_at = new_tat - tau
  if allowed_at > now and allowed_at - now > wait then wait = allowed_at - now end
  tats[i] = new_tat
end
if wait > 0 and mode == 'take' then
  return wait
end
for i, key in ipairs(KEYS) do
  local ttl_ms = math.ceil((tats[i] - now) / 1000) + 1000
  redis.call('SET', key, string.format('%d', tats[i]), 'PX', ttl_ms)
end
return 0
"#;

/// One GCRA bucket: a request of `n` costs `n * interval_us`; up to `tau_us` may be
/// borrowed ahead (the burst).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Microseconds per unit.
    pub interval_us: u64,
    /// Burst tolerance in microseconds (burst * interval).
    pub tau_us: u64,
    /// The burst, in units.
    pub burst: u32,
}

impl Gcra {
    /// `per_minute` with the same burst as [`super::quota`].
    pub fn per_minute(per_minute: u32, min_burst: u32) -> Option<Gcra> {
        if per_minute == 0 {
            return None;
        }
        let burst = (per_minute / 60).max(min_burst).max(1);
        let interval_us = (60_000_000 / u64::from(per_minute)).max(1);
        Some(Gcra {
            interval_us,
            tau_us: interval_us * u64::from(burst),
            burst,
        })
    }
}

/// The limits in Redis.
pub struct RedisLimiter {
    connection: ConnectionManager,
    script: Script,
    timeout: Duration,
    rpm: Option<(String, Gcra)>,
    tpm: Option<(String, Gcra)>,
    per_user: Option<(String, Gcra)>,
}

impl RedisLimiter {
    /// Limits for `quotas` under the keys `{prefix}:rpm`, `{prefix}:tpm` and
    /// `{prefix}:user:{user}`. Connects lazily (and reconnects by itself): no error here
    /// when Redis is down, only from the decisions.
    pub fn new(
        url: &str,
        prefix: &str,
        quotas: &Quotas,
        timeout: Duration,
    ) -> Result<RedisLimiter, LimitError> {
        let client = ::redis::Client::open(url)
            .map_err(|e| LimitError::Config(format!("limits.redis_url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(timeout);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| LimitError::Config(format!("limits.redis_url: {e}")))?;
        Ok(RedisLimiter {
            connection,
            script: Script::new(GCRA),
            timeout,
            rpm: Gcra::per_minute(quotas.rpm, 1).map(|g| (format!("{prefix}:rpm"), g)),
            tpm: Gcra::per_minute(quotas.tpm, token_burst(quotas))
                .map(|g| (format!("{prefix}:tpm"), g)),
            per_user: Gcra::per_minute(quotas.per_user_rpm, 1)
                .map(|g| (format!("{prefix}:user:"), g)),
        })
    }

    /// One script run: `Ok(Duration::ZERO)` admitted (or charged), else the wait.
    async fn decide(
        &self,
        buckets: &[(&str, Gcra, u32)],
        mode: &'static str,
    ) -> Result<Duration, LimitError> {
        if buckets.is_empty() {
            return Ok(Duration::ZERO);
        }
        let mut invocation = self.script.prepare_invoke();
        for (key, gcra, n) in buckets {
            invocation
                .key(*key)
                .arg(gcra.interval_us)
                .arg(gcra.tau_us)
                .arg(*n);
        }
        invocation.arg(mode);
        let mut connection = self.connection.clone();
        let wait_us: u64 =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection))
                .await
                .map_err(|_| {
                    LimitError::Unavailable(format!("no answer within {:?}", self.timeout))
                })?
                .map_err(|e| LimitError::Unavailable(e.to_string()))?;
        Ok(Duration::from_micros(wait_us))
    }

    /// PING, bounded by the timeout.
    pub async fn ping(&self) -> Result<(), LimitError> {
        let mut connection = self.connection.clone();
        let pong: String = tokio::time::timeout(
            self.timeout,
            ::redis::cmd("PING").query_async(&mut connection),
        )
        .await
        .map_err(|_| LimitError::Unavailable(format!("no answer within {:?}", self.timeout)))?
        .map_err(|e| LimitError::Unavailable(e.to_string()))?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(LimitError::Unavailable(format!("PING answered {pong:?}")))
        }
    }
}

impl Limiter for RedisLimiter {
    fn acquire(&self, tokens: u32, deadline: Instant) -> LimitFuture<'_, ()> {
        Box::pin(async move {
            let mut buckets = Vec::with_capacity(2);
            if let Some((key, gcra)) = &self.rpm {
                buckets.push((key.as_str(), *gcra, 1));
            }
            if let Some((key, gcra)) = &self.tpm {
                buckets.push((key.as_str(), *gcra, tokens.min(gcra.burst).max(1)));
            }
            loop {
                let wait = self.decide(&buckets, "take").await?;
                if wait.is_zero() {
                    return Ok(());
                }
                // Other daemons may take the capacity first: wait, then ask again.
                let at = Instant::now() + wait;
                if at > deadline {
                    return Err(LimitError::DeadlineExceeded);
                }
                tokio::time::sleep_until(at).await;
            }
        })
    }

    fn check_user<'a>(&'a self, user: &'a str) -> LimitFuture<'a, ()> {
        Box::pin(async move {
            let Some((prefix, gcra)) = &self.per_user else {
                return Ok(());
            };
            let key = format!("{prefix}{user}");
            let wait = self.decide(&[(key.as_str(), *gcra, 1)], "take").await?;
            if wait.is_zero() {
                Ok(())
            } else {
                Err(LimitError::UserLimited { retry_after: wait })
            }
        })
    }

    fn charge(&self, tokens: u32) -> LimitFuture<'_, ()> {
        Box::pin(async move {
            if let Some((key, gcra)) = &self.tpm
                && tokens > 0
            {
                self.decide(&[(key.as_str(), *gcra, tokens.min(gcra.burst))], "charge")
                    .await?;
            }
            Ok(())
        })
    }
}
