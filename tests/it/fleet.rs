//! Three `sfcdc run` processes on one fresh PostgreSQL database against the emulator: one
//! subscriber per channel at every sample, failover after a graceful stop (the lease released),
//! a crash (the lease expired) and a pause (a fenced, refused commit), checkpoints that never
//! move backwards, exactly the approved jobs, one coherent cache, and a shared job backlog.
//!
//! No figure here is a time bound: what is asserted is how each failover happened (the takeover
//! reason and generation), and the times are printed for the record.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sfcdc::decode::Position;
use sfcdc::store::Store;
use sfcdc::store::lease::{LeaseRow, Leases};
use sfcdc::store::postgres::PgStore;

use super::worker::worker_env;
use crate::common::*;

const ITEMS: &str = "/data/OrderItemChangeEvent";
const READ_TOKEN: &str = "read-token-for-fleet-tests-0123456789";
const TTL: &str = "3s";

/// One instance of the fleet.
struct Instance {
    name: String,
    proc: Option<Proc>,
    admin: String,
}

impl Instance {
    fn pid(&self) -> i32 {
        self.proc.as_ref().expect("running").pid()
    }

    async fn metrics(&self, http: &reqwest::Client) -> String {
        http.get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// A free loopback address for an admin server.
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

struct Fleet {
    org: Org,
    store: PgStore,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    instances: Vec<Instance>,
    http: reqwest::Client,
}

impl Fleet {
    /// Starts `n` instances on a fresh database, with the worker, a short lease and the order
    /// read API.
    async fn start(pg: &str, n: usize) -> Fleet {
        let db = fresh_database(pg).await;
        let org = Org::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut env = binary_env(&org, dir.path(), &db);
        env.retain(|(k, _)| k != "SFCDC_CHANNELS" && k != "SFCDC_ADMIN_ADDR");
        env.extend(worker_env(&org, &[]));
        env.retain(|(k, _)| k != "SFCDC_CHANNELS");
        env.push(("SFCDC_CHANNELS".into(), format!("{ORDERS},{ITEMS},{PE}")));
        env.push(("SFCDC_LEASE_TTL".into(), TTL.into()));
        env.push(("SFCDC_READ_TOKEN".into(), READ_TOKEN.into()));
        let store = PgStore::connect(&db, None).await.unwrap();
        store.migrate().await.unwrap();
        let mut fleet = Fleet {
            org,
            store,
            dir,
            env,
            instances: Vec::new(),
            http: reqwest::Client::new(),
        };
        for i in 0..n {
            fleet.spawn(&format!("i{i}"));
        }
        fleet
    }

    fn spawn(&mut self, name: &str) {
        let admin = free_addr();
        let mut env = self.env.clone();
        env.push(("SFCDC_INSTANCE_ID".into(), name.into()));
        env.push(("SFCDC_ADMIN_ADDR".into(), admin.clone()));
        let proc = spawn_run(&env, &self.dir.path().join(format!("{name}.log")));
        match self.instances.iter_mut().find(|i| i.name == name) {
            Some(i) => {
                i.proc = Some(proc);
                i.admin = admin;
            }
            None => self.instances.push(Instance {
                name: name.into(),
                proc: Some(proc),
                admin,
            }),
        }
    }

    fn instance(&self, name: &str) -> &Instance {
        self.instances.iter().find(|i| i.name == name).unwrap()
    }

    async fn leases(&self) -> BTreeMap<String, LeaseRow> {
        self.store
            .leases()
            .await
            .unwrap()
            .into_iter()
            .map(|l| (l.channel.clone(), l))
            .collect()
    }

    /// Waits until every channel is held live with one open subscription, and the channels
    /// are spread: one per running instance. The leases by channel.
    async fn settled(&self) -> BTreeMap<String, LeaseRow> {
        let running = self.instances.iter().filter(|i| i.proc.is_some()).count();
        eventually("every channel held, one per instance", async || {
            let leases = self.leases().await;
            let open = self.org.emu.stats().open_subscriptions;
            let all = [ORDERS, ITEMS, PE]
                .iter()
                .all(|c| leases.get(*c).is_some_and(LeaseRow::is_live) && open.get(*c) == Some(&1));
            let holders: BTreeSet<&str> = leases
                .values()
                .filter_map(|l| l.holder.as_deref())
                .collect();
            (all && holders.len() == running.min(3)).then_some(leases)
        })
        .await
    }

    async fn stop_all(&mut self) {
        for i in &mut self.instances {
            if let Some(mut p) = i.proc.take() {
                signal(p.pid(), "TERM");
                let code = p.0.wait().await.unwrap().code();
                assert_eq!(code, Some(0), "{} stops cleanly", i.name);
            }
        }
    }
}

/// Samples the emulator and the store every 20 ms until stopped: no channel ever has two open
/// subscriptions, and no checkpoint ever moves backwards. Returns what it saw.
fn watch(
    org: &Org,
    store: PgStore,
    stop: Arc<AtomicBool>,
    pausing: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    let (http, stats) = (org.http.clone(), org.url("/emulator/stats"));
    tokio::spawn(async move {
        let mut samples = 0;
        let mut problems = Vec::new();
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        while !stop.load(Ordering::Relaxed) {
            samples += 1;
            let open: Value = match http.get(&stats).send().await {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => Value::Null,
            };
            if let Some(open) = open["open_subscriptions"].as_object() {
                for (topic, n) in open {
                    // A paused process cannot close its stream: the server holds it open until
                    // the process wakes. What matters then is that it commits nothing (the
                    // checkpoints below, and the fence).
                    if n.as_u64().unwrap_or(0) > 1 && !pausing.load(Ordering::Relaxed) {
                        problems.push(format!("{topic} had {n} open subscriptions"));
                    }
                }
            }
            if let Ok(cps) = store.checkpoints().await {
                for c in cps {
                    if let Position::After(r) = &c.position {
                        let p = r.position().unwrap_or(0);
                        let before = last.insert(c.channel.clone(), p).unwrap_or(0);
                        if p < before {
                            problems.push(format!("{} moved back from {before} to {p}", c.channel));
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (samples, problems)
    })
}

#[tokio::test]
async fn a_fleet_holds_each_channel_once_and_fails_over_after_a_stop_a_crash_and_a_pause() {
    let Some(pg) = postgres_url() else { return };
    let mut f = Fleet::start(&pg, 3).await;
    let stop = Arc::new(AtomicBool::new(false));
    let pausing = Arc::new(AtomicBool::new(false));
    let watcher = watch(&f.org, f.store.clone(), stop.clone(), pausing.clone());
    let mut approved: BTreeSet<String> = BTreeSet::new();

    // Three channels, three instances: the first to start takes all three, then gives up one
    // per renewal as the others appear, until each holds one.
    let leases = f.settled().await;
    approved.extend(f.org.emu.bulk(300).approved_ids);

    // A graceful stop releases the lease: another instance takes it as released.
    let holder = leases[ORDERS].holder.clone().unwrap();
    let generation = leases[ORDERS].generation;
    let stopped_at = Instant::now();
    let i = f.instances.iter_mut().find(|i| i.name == holder).unwrap();
    let mut p = i.proc.take().unwrap();
    signal(p.pid(), "TERM");
    assert_eq!(p.0.wait().await.unwrap().code(), Some(0));
    let after = eventually("another instance takes the released channel", async || {
        let l = f.leases().await.remove(ORDERS)?;
        (l.is_live() && l.holder.as_deref() != Some(&holder)).then_some(l)
    })
    .await;
    eprintln!(
        "SIGTERM failover: {} ms (released, generation {} -> {})",
        stopped_at.elapsed().as_millis(),
        generation,
        after.generation
    );
    assert_eq!(after.generation, generation + 1);
    let new_holder = after.holder.clone().unwrap();
    let metrics = f.instance(&new_holder).metrics(&f.http).await;
    assert_eq!(
        metric_value(
            &metrics,
            "sfcdc_lease_takeovers_total",
            &[("channel", ORDERS), ("reason", "released")]
        ),
        1.0
    );
    f.spawn(&holder);
    approved.extend(f.org.emu.bulk(300).approved_ids);

    // A crash leaves the lease to expire: another takes it over as expired.
    let leases = f.settled().await;
    let holder = leases[ORDERS].holder.clone().unwrap();
    let killed_at = Instant::now();
    let i = f.instances.iter_mut().find(|i| i.name == holder).unwrap();
    let mut p = i.proc.take().unwrap();
    signal(p.pid(), "KILL");
    let _ = p.0.wait().await;
    approved.extend(f.org.emu.bulk(300).approved_ids);
    let after = eventually("another instance takes the expired channel", async || {
        let l = f.leases().await.remove(ORDERS)?;
        (l.is_live() && l.holder.as_deref() != Some(&holder)).then_some(l)
    })
    .await;
    eprintln!(
        "SIGKILL failover: {} ms (expired, TTL {TTL})",
        killed_at.elapsed().as_millis()
    );
    let metrics = f
        .instance(after.holder.as_deref().unwrap())
        .metrics(&f.http)
        .await;
    assert_eq!(
        metric_value(
            &metrics,
            "sfcdc_lease_takeovers_total",
            &[("channel", ORDERS), ("reason", "expired")]
        ),
        1.0
    );
    f.spawn(&holder);

    // A pause past the TTL: another takes over and commits; the paused one's next commit is
    // refused, and it stands by.
    let leases = f.settled().await;
    let paused = leases[ORDERS].holder.clone().unwrap();
    let paused_generation = leases[ORDERS].generation;
    pausing.store(true, Ordering::Relaxed);
    signal(f.instance(&paused).pid(), "STOP");
    approved.extend(f.org.emu.bulk(300).approved_ids);
    let after = eventually(
        "another instance takes the paused one's channel",
        async || {
            let l = f.leases().await.remove(ORDERS)?;
            (l.is_live() && l.generation > paused_generation).then_some(l)
        },
    )
    .await;
    caught_up(&f.org, &f.store, &[ORDERS]).await;
    signal(f.instance(&paused).pid(), "CONT");
    approved.extend(f.org.emu.bulk(300).approved_ids);
    let lost = eventually(
        "the paused instance notices it lost the lease",
        async || {
            let m = f.instance(&paused).metrics(&f.http).await;
            let lost = metric_value(&m, "sfcdc_lease_lost_total", &[("channel", ORDERS)]);
            (lost >= 1.0).then_some(m)
        },
    )
    .await;
    // It stood by; unless, by the time of that scrape, the channel had come back to it as a new
    // lease (the fleet spreads channels again once it is back, and a loaded machine is slow).
    if metric_value(&lost, "sfcdc_channel_leader", &[("channel", ORDERS)]) != 0.0 {
        let now = f.leases().await.remove(ORDERS).unwrap();
        assert_eq!(now.holder.as_deref(), Some(paused.as_str()), "{lost}");
        assert!(now.generation > after.generation, "{lost}");
    }
    assert_ne!(after.holder.as_deref(), Some(paused.as_str()));
    eventually("the paused instance's stream closes", async || {
        (f.org.emu.stats().open_subscriptions.get(ORDERS) == Some(&1)).then_some(())
    })
    .await;
    pausing.store(false, Ordering::Relaxed);
    caught_up(&f.org, &f.store, &[ORDERS]).await;

    // Exactly the approved jobs, none twice.
    let jobs = jobs_by_order(&f.store).await;
    assert_eq!(jobs.keys().cloned().collect::<BTreeSet<_>>(), approved);
    assert!(jobs.values().all(|n| *n == 1), "no approval has two jobs");

    stop.store(true, Ordering::Relaxed);
    let (samples, problems) = watcher.await.unwrap();
    assert!(samples > 10, "{samples} samples");
    assert!(problems.is_empty(), "{problems:?}");
    f.stop_all().await;
}

#[tokio::test]
async fn a_fleet_shares_the_job_backlog_and_keeps_one_coherent_cache() {
    let Some(pg) = postgres_url() else { return };
    let mut f = Fleet::start(&pg, 3).await;
    let leases = f.settled().await;
    // A reader that does not hold the orders channel caches an order.
    let holder = leases[ORDERS].holder.clone().unwrap();
    let reader = f
        .instances
        .iter()
        .find(|i| i.name != holder)
        .unwrap()
        .admin
        .clone();
    let d = drafts(&f.org).await;
    let read = |http: reqwest::Client, id: String| {
        let url = format!("http://{reader}/orders/{id}");
        async move {
            let v: Value = http
                .get(url)
                .bearer_auth(READ_TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v
        }
    };
    let before = read(f.http.clone(), d[0].clone()).await;
    assert_ne!(before["order"]["PoNumber"], "PO-FLEET-1", "{before}");
    // The holder sees the change event and invalidates; the reader's next read is fresh.
    f.org
        .patch_order(&d[0], json!({"PoNumber": "PO-FLEET-1"}))
        .await;
    eventually("the reader sees the change", async || {
        let v = read(f.http.clone(), d[0].clone()).await;
        (v["order"]["PoNumber"] == "PO-FLEET-1").then_some(())
    })
    .await;

    // A backlog of about three hundred approvals: every instance's worker runs some of it. (Three
    // debug builds on a loaded 2-core machine complete about 60-90 jobs a second between them, so
    // a thousand came too close to the test's patience.)
    f.org.emu.fulfilment().update(|c| c.sync_rate = 1.0);
    let approved: BTreeSet<String> = f.org.emu.bulk(3_000).approved_ids.into_iter().collect();
    assert!(approved.len() >= 250, "{}", approved.len());
    eventually("every job completed", async || {
        let counts = f.store.state_counts().await.unwrap();
        let completed = counts
            .jobs
            .iter()
            .find(|(s, _)| s == "completed")
            .map_or(0, |(_, n)| *n);
        (completed as usize >= approved.len()).then_some(())
    })
    .await;
    for i in &f.instances {
        let m = i.metrics(&f.http).await;
        let ran = metric_value(&m, "sfcdc_job_steps_total", &[("outcome", "completed")]);
        eprintln!("{} completed {ran} jobs", i.name);
        assert!(ran > 0.0, "{} ran none of the backlog", i.name);
    }
    f.stop_all().await;
}
