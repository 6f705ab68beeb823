//! `sv1-shares`: accepted Stratum V1 shares per second at the declarator, pinned to one core.
//!
//! The declarator runs under `taskset -c 0` (when taskset exists) with a share target so easy
//! that every hash is a share (`sv1_initial_hash_rate = 1`, `shares_per_minute = 1000`), so the
//! load generator needs no mining: it precomputes unique shares that are not blocks (regtest
//! makes half of all hashes blocks; those would measure `submitblock`, not share handling),
//! then pipelines them over `--connections` V1 connections for `--secs` seconds. Every answer
//! is read and counted; only `true` answers count as accepted. The declarator's CPU time over
//! the run (from /proc) gives shares per CPU-second as well.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use jdc_tests::bitcoind::Bitcoind;
use jdc_tests::stack::Stack;
use jdc_tests::sv1_client::{header, V1Client, V1Job};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One connection's precomputed submits (lines with their newline) and its job.
struct Load {
    lines: Vec<u8>,
    count: usize,
}

/// Shares for `job` that meet no network target: `mining.submit` lines, ready to send.
fn precompute(job: &V1Job, extranonce1: &[u8], en2_size: usize, count: usize, conn: u8) -> Load {
    let mut en2 = vec![0u8; en2_size];
    en2[0] = conn;
    let en2_hex = hex::encode(&en2);
    let mut lines = Vec::with_capacity(count * 110);
    let mut made = 0;
    let mut nonce = 0u32;
    while made < count {
        let h = header(job, extranonce1, &en2, job.version, nonce);
        if !h.target().is_met_by(h.block_hash()) {
            made += 1;
            lines.extend_from_slice(
                format!(
                    "{{\"id\":{made},\"method\":\"mining.submit\",\"params\":[\"bench\",\"{}\",\"{en2_hex}\",\"{:08x}\",\"{nonce:08x}\"]}}\n",
                    job.id, job.ntime
                )
                .as_bytes(),
            );
        }
        nonce += 1;
    }
    Load { lines, count: made }
}

/// utime + stime of `pid`, seconds.
fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, a)| a)
        .context("stat format")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

pub async fn run(secs: u64, connections: usize) -> anyhow::Result<()> {
    let bitcoind = Bitcoind::start()?;
    bitcoind.generate(1)?;
    let mut stack = Stack::new(&bitcoind, "51", "")?;
    let sets = [
        "declarator.sv1_initial_hash_rate=1.0",
        "declarator.shares_per_minute=1000",
        "declarator.sv1_max_submits_per_sec=100000000",
    ];
    let declarator = stack.bin("jdc-declarator");
    let mut args = vec![
        "-c".to_string(),
        "0".to_string(),
        declarator.display().to_string(),
        "-c".to_string(),
        stack.config.display().to_string(),
    ];
    for s in sets {
        args.push("--set".into());
        args.push(s.into());
    }
    let pinned = std::process::Command::new("taskset")
        .arg("-V")
        .output()
        .is_ok();
    if pinned {
        stack.start_command(
            "declarator",
            std::path::Path::new("taskset"),
            &args,
            "Stratum V1 server listening",
        )?;
    } else {
        let sets: Vec<String> = sets
            .iter()
            .flat_map(|s| ["--set".to_string(), s.to_string()])
            .collect();
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        stack.start("declarator", &sets, "Stratum V1 server listening")?;
    }
    stack.start_template_source()?;
    let addr = format!("127.0.0.1:{}", stack.ports.sv1);

    // Connect, take the job, precompute each connection's shares.
    // Enough for 100k shares a second per connection.
    let per_conn = 100_000 * secs as usize;
    let mut loads = Vec::new();
    for conn in 0..connections {
        let mut dev = V1Client::connect(&addr)?;
        dev.handshake(None)?;
        let job = dev.latest_job(Duration::from_secs(30), Duration::from_millis(500))?;
        let (en1, en2_size) = (dev.extranonce1.clone(), dev.extranonce2_size);
        let load = tokio::task::spawn_blocking(move || {
            precompute(&job, &en1, en2_size, per_conn, conn as u8)
        })
        .await?;
        loads.push((dev, load));
    }
    eprintln!(
        "{} connections, {} shares each precomputed; declarator {}",
        connections,
        per_conn,
        if pinned {
            "pinned to core 0"
        } else {
            "not pinned (no taskset)"
        }
    );
    let pid = stack.get("declarator")?.pid();
    let cpu0 = cpu_secs(pid)?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for (dev, load) in loads {
        // Hand the blocking socket's connection to tokio: a fresh one would need a new
        // subscription; reuse the same stream.
        let std_stream = dev.into_stream()?;
        std_stream.set_nonblocking(true)?;
        let stream = TcpStream::from_std(std_stream)?;
        tasks.push(tokio::spawn(drive(stream, load, deadline)));
    }
    let mut accepted = 0u64;
    let mut rejected = 0u64;
    for t in tasks {
        let (a, r) = t.await??;
        accepted += a;
        rejected += r;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid)? - cpu0;
    if accepted == 0 {
        bail!(
            "no share accepted ({rejected} rejected): see the declarator's log in {}",
            stack.dir.display()
        );
    }
    println!(
        "| V1 shares accepted | {accepted} in {elapsed:.1} s | {:.0}/s |",
        accepted as f64 / elapsed
    );
    println!("| rejected | {rejected} | |");
    println!(
        "| declarator CPU | {cpu:.1} s | {:.0} accepted shares per CPU-second |",
        accepted as f64 / cpu.max(1e-9)
    );
    Ok(())
}

/// Writes the load (at most `WINDOW` answers outstanding) and counts answers until `deadline`.
async fn drive(stream: TcpStream, load: Load, deadline: Instant) -> anyhow::Result<(u64, u64)> {
    const WINDOW: usize = 512;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut sent = 0usize;
    let mut answered = 0usize;
    let (mut accepted, mut rejected) = (0u64, 0u64);
    let mut offsets = Vec::with_capacity(load.count + 1);
    offsets.push(0);
    for (i, b) in load.lines.iter().enumerate() {
        if *b == b'\n' {
            offsets.push(i + 1);
        }
    }
    while Instant::now() < deadline {
        if sent < load.count && sent - answered < WINDOW {
            let upto = (answered + WINDOW).min(load.count);
            write
                .write_all(&load.lines[offsets[sent]..offsets[upto]])
                .await?;
            sent = upto;
        }
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await;
        match line {
            Ok(Ok(Some(l))) => {
                if l.contains("\"mining.") {
                    continue; // notify / set_difficulty
                }
                answered += 1;
                if l.contains("\"result\":true") {
                    accepted += 1;
                } else {
                    rejected += 1;
                    if rejected == 1 {
                        eprintln!("first rejection: {l}");
                    }
                }
            }
            Ok(Ok(None)) => bail!("the declarator closed a connection"),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => bail!("no answer within 5 s"),
        }
        if answered == load.count {
            eprintln!("a connection ran out of precomputed shares: raise the count");
            break;
        }
    }
    Ok((accepted, rejected))
}
