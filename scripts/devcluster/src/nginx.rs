//! nginx in front of a region's replicas: one upstream per region, listening
//! on the region's HTTP address, as a load balancer would in production.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::Error;
use crate::plan::Plan;
use crate::process::{alive, output, signal};

/// The proxy settings every location includes.
const PROXY_CONF: &str = "\
proxy_http_version 1.1;
proxy_set_header Upgrade $http_upgrade;
proxy_set_header Connection $connection_upgrade;
proxy_set_header Host $host;
proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
proxy_read_timeout 1h;
proxy_send_timeout 1h;
";

/// nginx.conf for `plan`, its files under `dir` (absolute). `user`: the
/// user and group workers run as when started by root (else nobody).
pub fn conf(plan: &Plan, dir: &Path, user: Option<&str>) -> String {
    let dir = dir.display();
    let mut out = String::new();
    if let Some(user) = user {
        let _ = writeln!(
            out,
            "user {user};  # workers as the current user, not nobody"
        );
    }
    let _ = write!(
        out,
        "\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log {dir}/access.log;
  client_body_temp_path {dir}/tmp/body;
  proxy_temp_path {dir}/tmp/proxy;
  fastcgi_temp_path {dir}/tmp/fastcgi;
  uwsgi_temp_path {dir}/tmp/uwsgi;
  scgi_temp_path {dir}/tmp/scgi;
  # Websockets: pass Upgrade on; otherwise an empty Connection keeps
  # upstream connections alive.
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
"
    );
    for r in &plan.regions {
        let _ = writeln!(out, "  upstream {} {{", r.id);
        for n in plan.nodes.iter().filter(|n| n.region == r.id) {
            let _ = writeln!(out, "    server {} max_fails=1 fail_timeout=2s;", n.http);
        }
        let _ = write!(
            out,
            "    keepalive 64;
  }}
  server {{
    listen {listen};
    location / {{
      proxy_pass http://{id};
      include {dir}/proxy.conf;
    }}
    # By default (proxy_next_upstream error timeout) a POST is retried on
    # another replica only if it never reached the first: a retried rider
    # would be accepted twice. A rating, though, can reach a replica that
    # has not heard of the match yet (replication takes milliseconds); its
    # 404 changed nothing, so the other replicas are asked too.
    location = /rating {{
      proxy_pass http://{id};
      include {dir}/proxy.conf;
      proxy_next_upstream error timeout http_404 non_idempotent;
    }}
  }}
",
            listen = r.http,
            id = r.id,
        );
    }
    out.push_str("}\n");
    out
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

fn id(flag: &str) -> Result<String, Error> {
    Ok(output(Command::new("id").arg(flag))?.trim().to_string())
}

/// Installs nginx from Debian's packages if it is missing (as root, or
/// through passwordless sudo). A system nginx the package may start on :80
/// is not ours and is left alone.
fn install() -> Result<(), Error> {
    if on_path("nginx") {
        return Ok(());
    }
    let root = id("-u")? == "0";
    let sudo_ok = || {
        Command::new("sudo")
            .args(["-n", "true"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !root && !sudo_ok() {
        return Err(Error::Nginx(
            "nginx is missing; install it (apt-get install nginx-light) or run as root".into(),
        ));
    }
    eprintln!("installing nginx from Debian's packages");
    let apt = |args: &[&str]| {
        let mut command = if root {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.args(["-n", "apt-get"]);
            sudo
        };
        output(command.args(args).env("DEBIAN_FRONTEND", "noninteractive")).is_ok()
    };
    let installed = apt(&["install", "-y", "nginx-light"])
        || (apt(&["update"]) && apt(&["install", "-y", "nginx-light"]))
        || apt(&["install", "-y", "nginx"]);
    if installed {
        Ok(())
    } else {
        Err(Error::Nginx("could not install nginx".into()))
    }
}

/// Writes the configuration under `dir` and starts nginx (it daemonises);
/// returns once it has written its pid file.
pub fn start(plan: &Plan, dir: &Path) -> Result<(), Error> {
    install()?;
    let io = |what: &str| Error::io(format!("{what} {}", dir.display()));
    std::fs::create_dir_all(dir.join("tmp")).map_err(io("creating"))?;
    let dir = std::path::absolute(dir).map_err(io("resolving"))?;
    let _ = std::fs::remove_file(dir.join("nginx.pid"));
    let user = if id("-u")? == "0" {
        Some(format!("{} {}", id("-un")?, id("-gn")?))
    } else {
        None
    };
    std::fs::write(dir.join("proxy.conf"), PROXY_CONF).map_err(io("writing proxy.conf in"))?;
    let conf_file = dir.join("nginx.conf");
    std::fs::write(&conf_file, conf(plan, &dir, user.as_deref()))
        .map_err(io("writing nginx.conf in"))?;
    // -e: the error log before the config is read (default /var/log/nginx).
    output(
        Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_file)
            .arg("-e")
            .arg(dir.join("error.log")),
    )
    .map_err(|e| {
        Error::Nginx(format!(
            "did not start ({e}); see {}/error.log",
            dir.display()
        ))
    })?;
    for _ in 0..50 {
        if pid(&dir).is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(Error::Nginx(format!(
        "wrote no pid file; see {}/error.log",
        dir.display()
    )))
}

fn pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("nginx.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Stops the nginx started in `dir`: a graceful QUIT, then TERM after 5 s.
/// Not our child (it daemonised): polled until the master is gone.
pub fn stop(dir: &Path) {
    let Some(pid) = pid(dir) else { return };
    signal(pid, "QUIT");
    for _ in 0..50 {
        if !alive(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(pid, "TERM");
}

/// Where the configuration of a mesh in `mesh_dir` goes.
pub fn dir(mesh_dir: &Path) -> PathBuf {
    mesh_dir.join("nginx")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Region;

    #[test]
    fn each_region_balances_over_its_own_replicas() {
        let regions = ["a", "b"].map(|id| Region {
            id: id.into(),
            http: format!("127.0.0.1:80{}", if id == "a" { 81 } else { 82 })
                .parse()
                .unwrap(),
            quic: "127.0.0.1:9000".parse().unwrap(),
        });
        let mut next = 50000;
        let mut free = |tcp: usize, udp: usize| {
            let ports = (next..next + (tcp + udp) as u16).collect();
            next += (tcp + udp) as u16;
            Ok(ports)
        };
        let plan = Plan::build(regions.to_vec(), 2, 100, None, &mut free).unwrap();
        let text = conf(&plan, Path::new("/m/nginx"), None);
        let upstream_a = text.split("upstream a {").nth(1).unwrap();
        let upstream_a = upstream_a.split('}').next().unwrap();
        assert!(upstream_a.contains(&format!("server {} ", plan.nodes[0].http)));
        assert!(upstream_a.contains(&format!("server {} ", plan.nodes[1].http)));
        assert!(!upstream_a.contains(&plan.nodes[2].http.to_string()));
        assert!(text.contains("listen 127.0.0.1:8082;"));
        assert!(text.contains("pid /m/nginx/nginx.pid;"));
        assert!(!text.contains("user "));
    }
}
