"""Kafka: a single KRaft node (broker + controller) on 127.0.0.1, jars from Maven Central.

The jars (kafka_2.13 with its runtime dependencies) are fetched once with Maven into
`.cache/kafka/<version>/jars` and reused; the node's config, data and log live in `.services/kafka`.
"""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import uuid
from pathlib import Path

from kafka_protocol import broker_ready
from svc_base import Daemon
from svc_common import CACHE_ROOT, HOST, ServiceError, deb_installed, pick_port, run, say, wait_ready

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"  # the log4j2 line kafka 4.1 is built against; adds the slf4j binding
CACHE = CACHE_ROOT / "kafka" / KAFKA_VERSION
JARS = CACHE / "jars"
HEAP = "-Xmx512m"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.astrocyte</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = info
logger.state.name = state.change.logger
logger.state.level = warn
logger.req.name = kafka.request.logger
logger.req.level = warn
"""


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").exists():
        return str(Path(home, "bin", "java"))
    return shutil.which("java")


def _cluster_id() -> str:
    # Kafka's Uuid string form: url-safe base64 of 16 bytes, unpadded, never starting with '-'.
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not value.startswith("-"):
            return value


# The distribution's command-line tools (what its bin/*.sh run through kafka-run-class.sh).
_TOOLS = {
    "kafka-topics.sh": "org.apache.kafka.tools.TopicCommand",
    "kafka-console-producer.sh": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-console-consumer.sh": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-consumer-groups.sh": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
}
_TOOLS_LOG4J2 = """status = warn
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.err.ref = err
"""


def fetch_jars(log: Path) -> None:
    """Download kafka (broker and command-line tools) and its runtime dependencies once; a partial
    download, or one made from another dependency list, is never reused."""
    pom = _POM.format(kafka=KAFKA_VERSION, log4j=LOG4J_VERSION)
    stamp = CACHE / ".complete"
    if stamp.exists() and stamp.read_text() == pom:
        return
    if shutil.which("mvn") is None:
        raise ServiceError("mvn not found (apt-get install maven)", log)
    say(f"kafka: fetching kafka_2.13 {KAFKA_VERSION} jars with Maven (log: {log})")
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "pom.xml").write_text(pom)
    staging = CACHE / "jars.partial"
    shutil.rmtree(staging, ignore_errors=True)
    run(
        [
            "mvn",
            "-B",
            "-q",
            f"-Dmaven.repo.local={CACHE_ROOT / 'kafka' / 'm2'}",
            "-f",
            str(CACHE / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ],
        log,
        timeout=900,
    )
    shutil.rmtree(JARS, ignore_errors=True)
    staging.rename(JARS)
    stamp.write_text(pom)


class Kafka(Daemon):
    name = "kafka"
    start_timeout = 120.0

    def missing_debs(self) -> list[str]:
        missing = []
        if _java() is None and not deb_installed("openjdk-17-jre-headless"):
            missing.append("openjdk-17-jre-headless")
        if not (CACHE / ".complete").exists() and shutil.which("mvn") is None:
            missing.append("maven")
        return missing

    def marker(self, state: dict) -> str:
        return str(self.dir / "server.properties")

    def probe(self, state: dict) -> bool:
        return broker_ready(HOST, int(state.get("port") or 0))

    def start(self, state: dict) -> dict:
        java = _java()
        if java is None:
            raise ServiceError("java not found (need Java 17+)", self.log)
        fetch_jars(self.log)
        port = pick_port(state.get("port"))
        controller = pick_port(state.get("controller_port"), taken={port})
        self._write_config(port, controller)
        self._format_storage(java, state, port, controller)
        cmd = self.command(java)
        state.update(port=port, controller_port=controller, command=shlex.join(cmd))
        proc = self.launch(cmd, state)
        wait_ready(lambda: broker_ready(HOST, port), proc, self.start_timeout, self.log)
        say(f"kafka: started pid {proc.pid} on {HOST}:{port}")
        state["env"] = {
            "ASTROCYTE_TEST_KAFKA_BOOTSTRAP": f"{HOST}:{port}",
            "ASTROCYTE_TEST_KAFKA_BIN": str(self._write_tools(java)),
            "ASTROCYTE_TEST_KAFKA_HOME": str(self.dir),
            "ASTROCYTE_TEST_KAFKA_COMMAND": shlex.join(cmd),
        }
        return state

    def _write_tools(self, java: str) -> Path:
        """``kafka-topics.sh`` and friends, as the distribution's bin/ folder has them."""
        bin_dir = self.dir / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        log4j = self.dir / "tools-log4j2.properties"
        log4j.write_text(_TOOLS_LOG4J2)
        for name, main in _TOOLS.items():
            command = [java, "-Xmx256m", f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{JARS}/*", main]
            script = bin_dir / name
            script.write_text(f'#!/bin/sh\nexec {shlex.join(command)} "$@"\n')
            script.chmod(0o755)
        return bin_dir

    def command(self, java: str) -> list[str]:
        return [
            java,
            HEAP,
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.dir}",
            "-cp",
            f"{JARS}/*",
            "kafka.Kafka",
            str(self.dir / "server.properties"),
        ]

    def _write_config(self, port: int, controller: int) -> None:
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{HOST}:{controller}",
            "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.dir / "data"),
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
        }
        text = "".join(f"{key}={value}\n" for key, value in settings.items())
        (self.dir / "server.properties").write_text(text)
        (self.dir / "log4j2.properties").write_text(_LOG4J2)

    def _format_storage(self, java: str, state: dict, port: int, controller: int) -> None:
        """Format the log dir once; again only if the listener ports changed (the quorum is static)."""
        data = self.dir / "data"
        formatted_for = state.get("formatted_for")
        if (data / "meta.properties").exists() and formatted_for == [port, controller]:
            return
        shutil.rmtree(data, ignore_errors=True)
        cluster = _cluster_id()
        run(
            [
                java,
                HEAP,
                f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
                "-cp",
                f"{JARS}/*",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster,
                "-c",
                str(self.dir / "server.properties"),
            ],
            self.log,
            timeout=120,
        )
        state.update(formatted_for=[port, controller], cluster_id=cluster)
