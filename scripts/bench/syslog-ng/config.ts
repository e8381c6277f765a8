// syslog-ng (3.38) configurations that do what the agent does in the log benchmarks: read a
// file or a syslog TCP stream and POST batches of 1000 events to the Cybex-P API as the very
// same multipart upload the agent sends. The multipart framing is taken from the agent's own
// upload builder, so the receiver sees identical parts.
import { existsSync } from "node:fs";
import { buildUploadBody, type RouteMeta } from "../../../agent/upload.ts";
import type { EventKind } from "../../../agent/plugin.ts";

export const SYSLOG_NG = "/usr/sbin/syslog-ng";
export const LOGGEN = "/usr/bin/loggen";
const MODULE_DIR = "/usr/lib/syslog-ng/3.38";

/** Whether this syslog-ng has the disk-buffer() module. */
export function hasDiskBuffer(): boolean {
  return existsSync(`${MODULE_DIR}/libdisk-buffer.so`);
}

export interface Upload {
  /** POST {apiUrl}/raw */
  apiUrl: string;
  token: string;
  meta: RouteMeta;
  kind: EventKind;
}

export interface Tuning {
  /** http() workers: uploads in flight at once (the agent's api.concurrency). */
  workers: number;
  batchLines: number;
  batchTimeoutMs: number;
  /**
   * Source window under flow-control: messages read from one file or one connection but not
   * yet acknowledged by the destination. At least workers x batch-lines, or batches wait for
   * batch-timeout. (syslog-ng's log-iw-size of a network source is shared by all of its
   * max-connections; the config multiplies accordingly.)
   */
  logIwSize: number;
  /** Messages a source reads per poll. */
  logFetchLimit: number;
  /** disk-buffer(reliable(yes)) in this directory; undefined = syslog-ng's default memory queue. */
  diskBufferDir?: string;
}

export const DEFAULT_TUNING: Tuning = { workers: 4, batchLines: 1000, batchTimeoutMs: 1000, logIwSize: 10_000, logFetchLimit: 1000 };

/** A double-quoted syslog-ng config string. */
function quoted(s: string): string {
  return `"${s.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\r/g, "\\r").replace(/\n/g, "\\n")}"`;
}

/**
 * The upload body split around the file's content: what http() sends as body-prefix and
 * body-suffix around the delimited events. The suffix starts with the newline that ends the
 * last event (delimiter() only goes between events).
 */
export function multipartFraming(meta: RouteMeta, kind: EventKind): { contentType: string; prefix: string; suffix: string } {
  const boundary = `----cybexp-syslog-ng-${crypto.randomUUID().replace(/-/g, "")}`;
  const marker = "\u0000EVENTS\u0000";
  const built = buildUploadBody(meta, kind, [new TextEncoder().encode(marker)], () => boundary);
  const text = new TextDecoder().decode(built.body);
  const at = text.indexOf(marker);
  return { contentType: built.contentType, prefix: text.slice(0, at), suffix: "\n" + text.slice(at + marker.length) };
}

// The agent's syslog event as JSON: null for absent fields, structured data as
// {sdid: {param: value}}. PROCID and MSGID are printable ASCII without spaces (RFC 5424), so
// quoting them is enough to make a JSON string.
const SYSLOG_JSON_TEMPLATES = `
template t_quoted_pid { template("\\"\${PID}\\""); };
template t_quoted_msgid { template("\\"\${MSGID}\\""); };
template t_syslog_event { template('$(format-json
  facility=int(\${FACILITY_NUM}) severity=int(\${LEVEL_NUM}) timestamp=\${ISODATE}
  hostname=\${HOST} appname=\${PROGRAM}
  procid=literal($(if ("\${PID}" eq "") "null" "$(template t_quoted_pid)"))
  msgid=literal($(if ("\${MSGID}" eq "") "null" "$(template t_quoted_msgid)"))
  structured_data=literal($(if ("\${SDATA}" eq "") "null" "$(format-json --key .SDATA.* --shift 7)"))
  message=\${MSG} format=rfc5424 source_ip=\${SOURCEIP} transport=tcp)'); };
`;

function httpDestination(upload: Upload, tuning: Tuning, body: string): string {
  const { contentType, prefix, suffix } = multipartFraming(upload.meta, upload.kind);
  const diskBuffer = tuning.diskBufferDir
    ? `\n    disk-buffer(reliable(yes) dir(${quoted(tuning.diskBufferDir)}) disk-buf-size(1073741824))`
    : "";
  return `destination d_cybexp {
  http(
    url(${quoted(`${upload.apiUrl}/raw`)})
    method("POST")
    headers(${quoted(`Authorization: Bearer ${upload.token}`)}, ${quoted(`Content-Type: ${contentType}`)})
    body-prefix(${quoted(prefix)})
    body(${body})
    delimiter("\\n")
    body-suffix(${quoted(suffix)})
    batch-lines(${tuning.batchLines})
    batch-timeout(${tuning.batchTimeoutMs})
    workers(${tuning.workers})
    log-fifo-size(${Math.max(tuning.logIwSize, 10_000)})${diskBuffer}
  );
};`;
}

function config(source: string, destination: string, extra = ""): string {
  return `@version: 3.38
options { stats-freq(0); keep-hostname(yes); chain-hostnames(no); };
${extra}
${source}
${destination}
log { source(s_bench); destination(d_cybexp); flags(flow-control); };
`;
}

/** Scenario A: `path` read from its beginning, each line (unparsed) one text event. */
export function fileToHttpConfig(path: string, upload: Upload, tuning: Tuning = DEFAULT_TUNING): string {
  const source = `source s_bench {
  file(${quoted(path)} follow-freq(1) flags(no-parse)
       log-iw-size(${tuning.logIwSize}) log-fetch-limit(${tuning.logFetchLimit}));
};`;
  return config(source, httpDestination(upload, tuning, '"${MSG}"'));
}

/** syslog-ng's default: the source's window is split among this many connections. */
const MAX_CONNECTIONS = 10;

/** Scenario B: RFC 5424 over TCP (octet counting or LF framing), each message one JSON event. */
export function syslogTcpToHttpConfig(host: string, port: number, upload: Upload, tuning: Tuning = DEFAULT_TUNING): string {
  const source = `source s_bench {
  syslog(ip(${quoted(host)}) port(${port}) transport("tcp") max-connections(${MAX_CONNECTIONS})
         log-iw-size(${tuning.logIwSize * MAX_CONNECTIONS}) log-fetch-limit(${tuning.logFetchLimit}));
};`;
  return config(source, httpDestination(upload, tuning, '"$(template t_syslog_event)"'), SYSLOG_JSON_TEMPLATES);
}

/** Arguments that keep syslog-ng in the foreground with all its state files in `dir`. */
export function syslogNgArgs(configFile: string, dir: string): string[] {
  return [
    "-F", "-e", "--no-caps",
    "-f", configFile,
    "--persist-file", `${dir}/syslog-ng.persist`,
    "--pidfile", `${dir}/syslog-ng.pid`,
    "--control", `${dir}/syslog-ng.ctl`,
  ];
}
