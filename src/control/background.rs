//! How background work is run so it never costs the answer path: builds on
//! a thread of their own at the lowest priority, replaced snapshots freed
//! there, and large freed tables returned to the system.

use std::sync::Arc;

use crate::snapshot::Snapshot;

/// Why [`in_background`] did not return a result.
#[derive(Debug, thiserror::Error)]
pub enum BackgroundError {
    #[error("cannot start a build thread: {0}")]
    Spawn(std::io::Error),
    #[error("the build thread panicked")]
    Panicked,
}

/// Runs `f` (a reload, a GeoIP rebuild) on a thread of its own at the lowest
/// CPU priority and waits for it without blocking the runtime. A fresh
/// thread each time: raising a thread's priority back can be refused
/// without privileges, so the runtime's blocking pool, which also serves
/// the admin API (metrics, health, overrides), is never lowered.
pub async fn in_background<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BackgroundError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lowest_priority();
            let _ = tx.send(f());
        })
        .map_err(BackgroundError::Spawn)?;
    rx.await.map_err(|_| BackgroundError::Panicked)
}

/// Frees a replaced snapshot on the calling (build) thread rather than on
/// whichever thread lets go of it last, which can be an answering thread
/// that loaded it just before the swap: the old GeoIP tables and mapping
/// are unmapped here, never on the answer path. A swap means no new reader
/// can get `old`, so its count only falls; readers hold it for one batch.
/// Gives up after a second (the last reader then frees it).
pub fn retire(old: Arc<Snapshot>) {
    retire_within(old, std::time::Duration::from_secs(1));
}

fn retire_within<T>(old: Arc<T>, limit: std::time::Duration) {
    let until = std::time::Instant::now() + limit;
    while Arc::strong_count(&old) > 1 && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    drop(old);
}

/// Makes large allocations (the transient tables of a snapshot or GeoIP
/// build, tens of MB) go back to the system when freed. glibc raises its
/// mmap threshold each time such a block is freed, so the next build's
/// tables come from the heap of the build thread's arena and stay resident
/// after the build: RSS grew from 14 to 23–69 MB after GeoIP swaps. A fixed
/// threshold keeps it at the size of what is live. Process-wide; call once
/// before any thread starts. Other allocators already return freed memory.
pub fn return_freed_tables() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a malloc parameter; called before other
    // threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Gives memory freed inside the heap back to the system (glibc keeps it
/// otherwise: idle keep-alive connections free their buffers between the
/// long-lived allocations of others, and RSS would stay at the peak of
/// busy connections). HAProxy trims its pools the same way. Blocking:
/// call it on a blocking thread.
pub fn trim_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it
    // takes the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Puts the allocator's own threads (jemalloc's `jemalloc_bg_thd`, which
/// return freed pages to the system) at the lowest CPU priority: nice 19,
/// and out of a real-time policy the process may run under, where they
/// would hold the CPU from an answering thread until done (tens of
/// milliseconds of stall after a large free). Threads already seen are in
/// `done`; call it now and then (threads are started as arenas are used).
/// Blocking (reads /proc): call it on a blocking thread.
pub fn demote_allocator_threads(done: &mut Vec<u32>) {
    #[cfg(target_os = "linux")]
    {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return;
        };
        for t in tasks.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if done.contains(&tid) {
                continue;
            }
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if comm.trim_end() != "jemalloc_bg_thd" {
                continue;
            }
            done.push(tid);
            let Ok(id) = libc::pid_t::try_from(tid) else {
                continue;
            };
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: both calls only change the scheduling of thread `id`
            // of this process; `param` lives across the call.
            unsafe {
                if libc::sched_getscheduler(id) != libc::SCHED_OTHER {
                    libc::sched_setscheduler(id, libc::SCHED_OTHER, &param);
                }
                libc::setpriority(libc::PRIO_PROCESS, id as libc::id_t, 19);
            }
        }
        // Threads that ended leave their ids behind: a bound.
        if done.len() > 64 {
            done.drain(..32);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = done;
}

/// Puts the calling thread at the lowest CPU priority (nice 19), so building
/// a snapshot (zone files, compiling geo decisions) takes CPU only when the
/// answer path does not need it. Only for threads of [`in_background`],
/// which end with their build: the priority is never raised back.
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid has no preconditions; setpriority on this thread's own id.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_allocators_threads_are_found_by_name_and_put_at_nice_19() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name("jemalloc_bg_thd".into())
            .spawn(move || {
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
                tx.send(tid).expect("send");
                let _ = stop_rx.recv();
            })
            .expect("spawn");
        let tid = rx.recv().expect("tid");
        let nice = || {
            let stat =
                std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).expect("stat");
            // Fields after the command's closing parenthesis; nice is the 19th field.
            let rest = &stat[stat.rfind(')').expect("comm") + 2..];
            rest.split(' ')
                .nth(16)
                .expect("nice")
                .parse::<i32>()
                .expect("number")
        };
        let mut done = Vec::new();
        demote_allocator_threads(&mut done);
        assert_eq!(done, vec![tid], "only the allocator's thread");
        assert_eq!(nice(), 19);
        stop_tx.send(()).expect("stop");
        t.join().expect("join");
    }

    #[test]
    fn a_retired_snapshot_is_freed_by_the_retiring_thread_once_readers_let_go() {
        struct Freed(Arc<Mutex<Option<std::thread::ThreadId>>>);
        impl Drop for Freed {
            fn drop(&mut self) {
                *self.0.lock().unwrap() = Some(std::thread::current().id());
            }
        }
        let by = Arc::new(Mutex::new(None));
        let old = Arc::new(Freed(by.clone()));
        // A reader that loaded it just before the swap and holds it a while.
        let reader = {
            let r = old.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                drop(r);
            })
        };
        retire_within(old, std::time::Duration::from_secs(10));
        assert_eq!(*by.lock().unwrap(), Some(std::thread::current().id()));
        reader.join().unwrap();

        // A reader that never lets go: retiring gives up, the reader frees it.
        let by = Arc::new(Mutex::new(None));
        let old = Arc::new(Freed(by.clone()));
        let held = old.clone();
        retire_within(old, std::time::Duration::from_millis(20));
        assert_eq!(*by.lock().unwrap(), None);
        drop(held);
        assert!(by.lock().unwrap().is_some());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn background_work_runs_niced_on_its_own_thread_and_leaves_callers_alone() {
        fn nice() -> i32 {
            // SAFETY: gettid has no preconditions; getpriority on this thread.
            unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::getpriority(libc::PRIO_PROCESS, tid)
            }
        }
        let (name, got) = in_background("geolb-test-build", || {
            let name = std::thread::current().name().map(str::to_string);
            (name, nice())
        })
        .await
        .expect("runs");
        assert_eq!(name.as_deref(), Some("geolb-test-build"));
        assert_eq!(got, 19);
        // The runtime's blocking pool, which serves the admin API, keeps
        // its priority.
        let pool = tokio::task::spawn_blocking(nice).await.expect("runs");
        assert_eq!(pool, nice());
        // A build that panics is an error, not a hang.
        let e = in_background("geolb-test-panic", || -> u8 { panic!("build failed") }).await;
        assert!(matches!(e, Err(BackgroundError::Panicked)));
    }
}
