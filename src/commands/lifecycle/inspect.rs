//! `sbx inspect`: a JSON array, one object per sandbox: identity, state,
//! config (from the saved spec), isolation, mounts, network, and what the
//! backend reported (a VM's engine and boot phases).

use anyhow::Result;
use sbx_shared::monitor::lifecycle;
use sbx_shared::paths::Root;
use sbx_shared::state::State;
use serde_json::{json, Value};

use super::{find, Found};

pub fn inspect(root: &Root, ids: &[String]) -> Result<u8> {
    let state = State::new(root);
    let mut out = Vec::new();
    let mut failed = false;
    for arg in ids {
        match find(root, &state, arg) {
            Ok(f) => out.push(describe(&state, &f)),
            Err(e) => {
                eprintln!("sbx: {e:#}");
                failed = true;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(if failed { 1 } else { 0 })
}

fn describe(state: &State, f: &Found) -> Value {
    let r = &f.record;
    let dir = state.dir(&r.id);
    let spec = lifecycle::load_spec(&dir).ok();
    let running = f.running();
    let config = match &spec {
        Some(s) => json!({
            "image": r.image.name,
            "cmd": s.process.args,
            "env": s.process.env,
            "workdir": s.process.cwd,
            "user": s.process.user,
            "hostname": s.hostname,
            "tty": s.process.terminal,
            "open_stdin": s.process.stdin,
            "read_only_rootfs": s.rootfs.read_only,
            "stop_signal": f.life.stop_signal.clone().unwrap_or_else(|| "SIGTERM".into()),
            "timeout_secs": s.timeout.map(|t| t.as_secs_f64()),
            "limits": s.limits,
        }),
        None => json!({ "image": r.image.name, "cmd": r.command }),
    };
    let network = spec.as_ref().map(|s| s.network);
    let networks: serde_json::Map<String, Value> = spec
        .iter()
        .flat_map(|s| &s.networks)
        .map(|a| {
            let v = json!({
                "ip_address": a.address,
                "prefix_len": a.subnet.prefix,
                "gateway": a.gateway,
                "mac_address": a.mac,
                "aliases": a.aliases,
                "network_id": a.network_id,
            });
            (a.network.clone(), v)
        })
        .collect();
    let mut ports = serde_json::Map::new();
    for m in spec.iter().flat_map(|s| &s.ports) {
        let entry = ports
            .entry(m.sandbox_side())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.push(json!({"host_ip": m.host_ip, "host_port": m.host_port.to_string()}));
        }
    }
    json!({
        "id": r.id,
        "name": r.name,
        "created": r.created,
        "image": r.image,
        "state": {
            "status": f.view.status,
            "running": running,
            "restarting": f.view.status == lifecycle::Shown::Restarting,
            "pid": if running { r.pid } else { None },
            "monitor_pid": if running { f.life.monitor_pid } else { None },
            "exit_code": f.view.exit_code,
            "error": f.view.error,
            "started_at": f.life.started,
            "finished_at": f.view.finished,
            "restart_count": f.life.restart_count,
        },
        "restart_policy": f.life.restart,
        "config": config,
        "isolation": r.isolation,
        "mounts": [],
        "network_settings": {
            "mode": network,
            "networks": networks,
            "ports": ports,
        },
        "backend": f.life.details,
        "auto_remove": r.auto_remove,
        "path": dir,
        "log_path": sbx_shared::logs::path(&dir),
    })
}
