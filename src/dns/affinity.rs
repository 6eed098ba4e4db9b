//! Worker placement for the UDP listeners (`udp_cpu_affinity`): each worker
//! thread is pinned to one CPU of the process's affinity mask, and a classic
//! BPF program on the `SO_REUSEPORT` group tells the kernel to hand a packet
//! to the worker pinned on the CPU that received it (where the network
//! stack's receive processing ran). A query is then received, answered and
//! sent on one CPU: no cross-CPU wake-up, and each worker's socket and
//! buffers stay in its own CPU's cache. Packets received on a CPU without a
//! worker fall back to the kernel's usual hash over the group. Knot DNS
//! calls the same thing `socket-affinity`.

use std::io;
use std::net::UdpSocket;

/// Where the workers of one listen address run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// CPU of worker i.
    pub cpus: Vec<usize>,
    /// Whether packets are steered to the worker on the receiving CPU
    /// (only when no two workers share a CPU).
    pub steered: bool,
}

impl Placement {
    /// `workers` workers over the CPUs a process may run on, in order;
    /// with more workers than CPUs, round-robin and not steered.
    pub fn over(allowed: &[usize], workers: usize) -> Option<Placement> {
        if allowed.is_empty() {
            return None;
        }
        let cpus: Vec<usize> = (0..workers.max(1))
            .map(|i| allowed[i % allowed.len()])
            .collect();
        Some(Placement {
            steered: cpus.len() <= allowed.len(),
            cpus,
        })
    }
}

/// Where `workers` workers of each listener run in this process, or None
/// (logged) when its CPUs cannot be read.
pub fn for_process(workers: usize) -> Option<Placement> {
    let allowed = match allowed_cpus() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "udp_cpu_affinity: cannot read this process's CPUs; UDP workers run unpinned");
            return None;
        }
    };
    let p = Placement::over(&allowed, workers)?;
    if !p.steered {
        tracing::warn!(
            workers,
            cpus = allowed.len(),
            "more UDP workers than CPUs: workers are pinned round-robin and packets are not steered by CPU"
        );
    }
    Some(p)
}

/// The CPUs this process may run on (its affinity mask, as `taskset` or
/// systemd's `CPUAffinity=` set it), in ascending order.
#[cfg(target_os = "linux")]
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is an empty set; the kernel fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this thread; size and pointer describe `set`.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: cpu < CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

#[cfg(not(target_os = "linux"))]
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "CPU affinity is only supported on Linux",
    ))
}

/// Pins the calling thread to one CPU.
#[cfg(target_os = "linux")]
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "CPU number out of range",
        ));
    }
    // SAFETY: a zeroed cpu_set_t is an empty set; cpu < CPU_SETSIZE.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is this thread; size and pointer describe `set`.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub fn pin_current_thread(_cpu: usize) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "CPU affinity is only supported on Linux",
    ))
}

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// Classic BPF encoding (linux/bpf_common.h): class | size | mode / op | source.
/// `BPF_LD | BPF_W | BPF_ABS` (0x00 | 0x00 | 0x20).
const BPF_LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JEQ | BPF_K` (0x05 | 0x10 | 0x00).
const BPF_JMP_JEQ_K: u16 = 0x15;
/// `BPF_RET | BPF_K` (0x06 | 0x00).
const BPF_RET_K: u16 = 0x06;
/// `SKF_AD_OFF + SKF_AD_CPU`: the ancillary load of the current CPU.
const LOAD_CPU: u32 = (-0x1000i32 + 36) as u32;
/// An index past the group: the kernel then picks a socket by its hash.
const NO_SOCKET: u32 = u32::MAX;

/// The reuseport program for `cpus` (CPU of socket i, in the order the
/// sockets joined the group): "if the receiving CPU is cpus[i], socket i",
/// for the first socket on each CPU; any other CPU, the kernel's hash.
pub fn program(cpus: &[usize]) -> Vec<Insn> {
    let mut p = vec![Insn {
        code: BPF_LD_W_ABS,
        jt: 0,
        jf: 0,
        k: LOAD_CPU,
    }];
    let mut seen = Vec::new();
    for (i, &cpu) in cpus.iter().enumerate() {
        if seen.contains(&cpu) {
            continue;
        }
        seen.push(cpu);
        // if A == cpu fall through to "return i", else skip it.
        p.push(Insn {
            code: BPF_JMP_JEQ_K,
            jt: 0,
            jf: 1,
            k: cpu as u32,
        });
        p.push(Insn {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: i as u32,
        });
    }
    p.push(Insn {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k: NO_SOCKET,
    });
    p
}

/// What `program` returns on `cpu`: the reference the tests hold it to.
#[cfg(test)]
fn run(program: &[Insn], cpu: usize) -> Option<u32> {
    let mut a = 0u32;
    let mut pc = 0usize;
    while let Some(i) = program.get(pc) {
        match i.code {
            BPF_LD_W_ABS if i.k == LOAD_CPU => a = cpu as u32,
            BPF_JMP_JEQ_K => {
                pc += usize::from(if a == i.k { i.jt } else { i.jf });
            }
            BPF_RET_K => return Some(i.k),
            _ => return None,
        }
        pc += 1;
    }
    None
}

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic/socket.h; the same on x86, ARM,
/// RISC-V and MIPS).
#[cfg(all(
    target_os = "linux",
    not(any(target_arch = "sparc", target_arch = "sparc64"))
))]
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
#[cfg(all(
    target_os = "linux",
    any(target_arch = "sparc", target_arch = "sparc64")
))]
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 0x0035;

/// Attaches the steering program to the group `sock` belongs to (any one
/// socket of the group will do; the group is then steered as a whole).
#[cfg(target_os = "linux")]
pub fn steer(sock: &UdpSocket, cpus: &[usize]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut filter: Vec<libc::sock_filter> = program(cpus)
        .into_iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let len = u16::try_from(filter.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many workers to steer"))?;
    let prog = libc::sock_fprog {
        len,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: a valid socket; `prog` points at `filter`, alive for the call
    // (the kernel copies the program).
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub fn steer(_sock: &UdpSocket, _cpus: &[usize]) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "steering by CPU is only supported on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cpu_with_a_worker_selects_that_workers_socket() {
        let p = program(&[4, 5, 7]);
        assert_eq!(run(&p, 4), Some(0));
        assert_eq!(run(&p, 5), Some(1));
        assert_eq!(run(&p, 7), Some(2));
    }

    #[test]
    fn a_cpu_without_a_worker_falls_back_to_the_kernels_hash() {
        let p = program(&[0, 1]);
        assert_eq!(run(&p, 2), Some(NO_SOCKET));
        assert_eq!(run(&p, 63), Some(NO_SOCKET));
    }

    #[test]
    fn a_cpu_shared_by_two_workers_selects_the_first_of_them() {
        let p = program(&[0, 1, 0]);
        assert_eq!(run(&p, 0), Some(0));
        assert_eq!(run(&p, 1), Some(1));
    }

    #[test]
    fn workers_are_spread_over_the_allowed_cpus_in_order() {
        let p = Placement::over(&[2, 3, 6], 2).expect("placement");
        assert_eq!(p.cpus, vec![2, 3]);
        assert!(p.steered);
        let p = Placement::over(&[2, 3], 3).expect("placement");
        assert_eq!(p.cpus, vec![2, 3, 2]);
        assert!(
            !p.steered,
            "two workers on one CPU cannot both be steered to"
        );
        assert_eq!(Placement::over(&[], 2), None);
        assert_eq!(Placement::over(&[5], 0).expect("placement").cpus, vec![5]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_encoding_is_the_kernels() {
        assert_eq!(
            u32::from(BPF_LD_W_ABS),
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS
        );
        assert_eq!(
            u32::from(BPF_JMP_JEQ_K),
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K
        );
        assert_eq!(u32::from(BPF_RET_K), libc::BPF_RET | libc::BPF_K);
        assert_eq!(LOAD_CPU, (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_kernel_accepts_the_steering_program_on_a_reuseport_group() {
        let (_, socks) =
            super::super::udp::bind_group("127.0.0.1:0".parse().expect("addr"), 2).expect("bind");
        steer(&socks[0], &[0, 1]).expect("SO_ATTACH_REUSEPORT_CBPF");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_may_run_on_some_cpu() {
        let cpus = allowed_cpus().expect("sched_getaffinity");
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]));
    }
}
