//! The Java stand-in for WSO2 API Manager 4.7 (`interop/wso2/`): built with Maven once per
//! test process, run as one JVM per test, spoken to one JSON line at a time.
//!
//! The program's header comment (`interop/wso2/src/main/java/io/keyward/interop/wso2/Main.java`)
//! documents the protocol. The jar and Maven's local repository live under
//! `${KEYWARD_CACHE:-~/.cache/keyward}` (as `hack/test-bins.sh`'s binaries do), never in the
//! repository: the build directory is named after a hash of the program's sources, so a
//! changed source builds afresh and an unchanged one is reused.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The jar's file name inside its build directory (the pom's `finalName`).
const JAR: &str = "keyward-wso2-interop.jar";

static JAR_PATH: OnceLock<PathBuf> = OnceLock::new();

/// A running stand-in; the JVM is killed when this is dropped.
pub struct Wso2Java {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Wso2Java {
    /// Starts the program, building it first if this test process has not.
    pub fn start() -> Self {
        let jar = JAR_PATH.get_or_init(build);
        // Tests start several at once on small machines: one GC thread, a small heap.
        let mut child = Command::new("java")
            .args(["-XX:+UseSerialGC", "-Xmx128m", "-jar"])
            .arg(jar)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run java -jar {}: {error}", jar.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one request and returns its response.
    pub fn request(&mut self, request: &Value) -> Value {
        let mut line = request.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .and_then(|()| self.stdin.flush())
            .expect("the Java stand-in takes a request");
        let mut response = String::new();
        let read = self
            .stdout
            .read_line(&mut response)
            .expect("the Java stand-in answers");
        assert!(read > 0, "the Java stand-in exited before answering");
        serde_json::from_str(&response).expect("the Java stand-in answers one JSON line")
    }

    /// A WSO2 node's AES-GCM ciphertext of `plaintext` (see the protocol for the settings).
    pub fn encrypt(
        &mut self,
        key: &str,
        enable_key_id: bool,
        iv_length: usize,
        plaintext: &[u8],
    ) -> String {
        let response = self.request(&json!({
            "op": "encrypt", "key": key, "enableKeyId": enable_key_id,
            "ivLength": iv_length, "plaintext": STANDARD.encode(plaintext),
        }));
        string_field(&response, "value")
    }

    /// A legacy `"t":"AES"` (AES/ECB) value under `key`.
    pub fn encrypt_legacy(&mut self, key: &str, plaintext: &[u8]) -> String {
        let response = self.request(&json!({
            "op": "encryptLegacy", "key": key, "plaintext": STANDARD.encode(plaintext),
        }));
        string_field(&response, "value")
    }

    /// What a node with `key`, `old_key` (None: unset) and `enable_key_id` reads from
    /// `value`: the plaintext, or WSO2's failure as text.
    pub fn decrypt(
        &mut self,
        key: &str,
        old_key: Option<&str>,
        enable_key_id: bool,
        value: &str,
    ) -> Result<Vec<u8>, String> {
        let response = self.request(&json!({
            "op": "decrypt", "key": key, "oldKey": old_key,
            "enableKeyId": enable_key_id, "value": value,
        }));
        match response.get("plaintext").and_then(Value::as_str) {
            Some(plaintext) => Ok(STANDARD.decode(plaintext).expect("Base64 plaintext")),
            None => Err(string_field(&response, "error")),
        }
    }

    /// The key id WSO2 writes for `key`.
    pub fn key_id(&mut self, key: &str) -> String {
        string_field(&self.request(&json!({"op": "keyId", "key": key})), "keyId")
    }

    /// The hashed client-secret record WSO2 stores for `secret` under `algorithm`.
    pub fn hash(&mut self, secret: &[u8], algorithm: &str) -> String {
        let response = self.request(&json!({
            "op": "hash", "secret": STANDARD.encode(secret), "algorithm": algorithm,
        }));
        string_field(&response, "record")
    }
}

impl Drop for Wso2Java {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn string_field(response: &Value, field: &str) -> String {
    match response.get(field).and_then(Value::as_str) {
        Some(text) => text.to_owned(),
        None => panic!("the Java stand-in answered {response} without {field:?}"),
    }
}

/// Builds the jar (or finds it built) and returns its path.
fn build() -> PathBuf {
    require_tool("java", "-version");
    require_tool("mvn", "-v");
    let project = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/wso2");
    let cache = cache_dir();
    let output = cache.join(format!("wso2-java-{}", sources_hash(&project)));
    let jar = output.join(JAR);
    if jar.is_file() {
        return jar;
    }
    // Build beside the final directory and rename, so a concurrent test process never
    // sees half a jar; whichever rename lands first wins and both jars are the same.
    let staging = cache.join(format!("wso2-java-building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let result = Command::new("mvn")
        .args(["--batch-mode", "--quiet", "-Dstyle.color=never", "package"])
        .arg(format!("-Dmaven.repo.local={}", cache.join("m2").display()))
        .arg(format!("-Dwso2.build.dir={}", staging.display()))
        .arg("-f")
        .arg(project.join("pom.xml"))
        .stdin(Stdio::null())
        .output()
        .expect("mvn runs");
    assert!(
        result.status.success(),
        "building the Java stand-in (mvn package in {}) failed:\n{}{}",
        project.display(),
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr),
    );
    if std::fs::rename(&staging, &output).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(jar.is_file(), "mvn package did not leave {}", jar.display());
    jar
}

/// Fails the test with what to install when `tool` is missing.
fn require_tool(tool: &str, version_flag: &str) {
    let found = Command::new(tool)
        .arg(version_flag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        found,
        "the WSO2 interop tests need Java 17 and Maven: `{tool}` is not on PATH \
         (Debian: apt-get install openjdk-17-jdk-headless maven; .ci/run installs them)"
    );
}

/// `${KEYWARD_CACHE:-${XDG_CACHE_HOME:-~/.cache}/keyward}`, as `hack/test-bins.sh` uses.
fn cache_dir() -> PathBuf {
    if let Some(cache) = std::env::var_os("KEYWARD_CACHE") {
        return PathBuf::from(cache);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache")
        });
    base.join("keyward")
}

/// A hash of the pom and every source file (paths and contents, in sorted order).
fn sources_hash(project: &Path) -> String {
    let mut files = vec![project.join("pom.xml")];
    collect_files(&project.join("src"), &mut files);
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        let relative = file.strip_prefix(project).expect("under the project");
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(std::fs::read(&file).expect("a readable source file"));
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..8])
}

fn collect_files(directory: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(directory).expect("a readable source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect_files(&path, files);
        } else {
            files.push(path);
        }
    }
}
