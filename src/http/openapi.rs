//! The OpenAPI 3.1 description of the API (`GET /openapi.json`) and a page that renders it
//! without any network access (`GET /docs`).

// Written out rather than derived with `utoipa` (5.5, evaluated for issue 14): its attributes
// take `maxLength` as a number literal and texts as expressions without access to the running
// proxy's `Limits`, so the form limits would have to be patched into the derived document by
// path and field name; its schemas have no JSON Schema `const` (`Accept-Ranges: bytes`, the
// 422 detail's `type`); and the handlers read multipart fields and build JSON by hand, so
// every form and answer would need a struct kept only for the document. Its UI crates fetch
// Swagger UI at build time or a CDN at run time, so `/docs` stays `DOCS_PAGE` either way.

use serde_json::{Value, json};

use super::Limits;
use super::download::{BLOB_KEY_FIELD, BLOB_KEY_HEADER};
use super::observe::REQUEST_ID_HEADER;

const AUTH_FAILED: &str = "Authentication failed.";
const THROTTLED: &str = "Too many failed authentications from this address; see Retry-After.";
const UNAVAILABLE: &str =
    "Storage unavailable, or too many transfers or authentications in progress; see Retry-After.";
const BLOB_UNAUTHENTIC: &str =
    "The stored blob failed authentication, or storage refused the proxy's credentials.";
const WRONG_KEY: &str = "The wrapped key does not open this blob.";
const BLOB_NOT_FOUND: &str = "Blob not found (or its container).";

/// The OpenAPI document.
pub fn document(limits: &Limits) -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "blobprox",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Encrypting proxy in front of Azure Blob Storage. Every endpoint except \
                            the health probes, /metrics and the documentation needs the three \
                            credential headers. Every error body is {\"detail\": ...}. Every \
                            response carries x-request-id (the client's, or a generated one)."
        },
        "security": [{"decryptionKey": [], "salt": [], "comparisonKey": []}],
        "paths": {
            "/key/public": {"get": public_key_operation()},
            "/upload/{container}/{blob}": {"post": upload_operation(limits)},
            "/download/{container}/{blob}": download_operations(),
            "/share/{container}/{blob}": {"post": share_operation(limits)},
            "/healthz": {"get": {"summary": "Alive.", "security": [],
                "responses": {"200": {"description": "The process answers."}}}},
            "/readyz": {"get": {"summary": "Keys loaded and storage reachable.", "security": [],
                "responses": {"200": {"description": "Ready."},
                              "503": {"description": "Not ready (storage unreachable, or draining after SIGTERM); detail says why."}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (no blob names, no secrets).", "security": [],
                "responses": {"200": {"description": "Text exposition format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document.", "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1."}}}},
            "/docs": {"get": {"summary": "This document as a page (works offline).", "security": [],
                "responses": {"200": {"description": "HTML."}}}}
        },
        "components": components()
    })
}

fn public_key_operation() -> Value {
    json!({
        "summary": "This proxy's RSA public key, to name it as a recipient.",
        "responses": {
            "200": {"description": "SubjectPublicKeyInfo PEM.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PublicKey"}}}},
            "401": error(AUTH_FAILED),
            "429": error(THROTTLED),
            "503": error("Authentication busy; see Retry-After.")
        }
    })
}

fn upload_operation(limits: &Limits) -> Value {
    json!({
        "summary": "Encrypt a file into storage with a fresh data key, wrapped for each recipient.",
        "parameters": parameters([]),
        "requestBody": {"required": true, "content": {"multipart/form-data": {
            "schema": {"type": "object", "required": ["public-keys", "file"], "properties": {
                "public-keys": {"type": "string", "maxLength": limits.max_public_keys_bytes,
                    "description": format!("JSON object: recipient id -> RSA public key PEM \
                        (2048 bits or more), at most {} recipients. May be a file part.",
                        limits.max_recipients)},
                "overwrite": {"type": "string", "default": "false",
                    "description": "true/false/1/0/yes/no/on/off, any case."},
                "file": {"type": "string", "format": "binary"}
            }}
        }}},
        "responses": {
            "200": upload_response("Stored. Both name pairs carry the same values."),
            "400": error("Malformed form, recipients, overwrite value, or names."),
            "401": error(AUTH_FAILED),
            "404": error("Container not found."),
            "409": error("Blob already exists (and overwrite is not true), or the name collides with a blob path."),
            "429": error(THROTTLED),
            "413": error("A field or the file is over its limit."),
            "422": validation_error("Missing form fields (FastAPI's shape)."),
            "502": error("Storage refused the proxy's credentials."),
            "503": error(UNAVAILABLE),
            "507": error("The local disk is full.")
        }
    })
}

/// GET and HEAD of a download: the same parameters and answers, HEAD without a body.
fn download_operations() -> Value {
    let parameters = parameters([blob_key_header(), range_header()]);
    let responses = json!({
        "200": {"description": "The whole plaintext.",
                "headers": {"Content-Length": {"schema": {"type": "integer"}},
                            "Accept-Ranges": {"schema": {"const": "bytes"}},
                            "Content-Disposition": {"schema": {"type": "string"}}},
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        "206": {"description": "The requested byte range (stream-format blobs).",
                "headers": {"Content-Range": {"schema": {"type": "string"}}}},
        "400": error("Missing or unusable wrapped key, or an invalid container or blob name."),
        "401": error(AUTH_FAILED),
        "429": error(THROTTLED),
        "403": error(WRONG_KEY),
        "404": error(BLOB_NOT_FOUND),
        "413": error("The request body is larger than a download needs."),
        "416": error("The range lies past the end; Content-Range gives the size."),
        "502": error(BLOB_UNAUTHENTIC),
        "503": error(UNAVAILABLE)
    });
    let blob_key_form =
        json!({"schema": {"type": "object", "properties": {BLOB_KEY_FIELD: {"type": "string"}}}});
    json!({
        "get": {
            "summary": "The plaintext, authenticated before release; Range supported.",
            "parameters": parameters,
            "requestBody": {"required": false, "content": {
                "application/x-www-form-urlencoded": blob_key_form,
                "multipart/form-data": blob_key_form
            }},
            "responses": responses
        },
        "head": {
            "summary": "The headers a GET would answer, without the body.",
            "parameters": parameters,
            "responses": responses
        }
    })
}

fn share_operation(limits: &Limits) -> Value {
    json!({
        "summary": "Wrap a stored blob's data key for more recipients, without rewriting \
                    the blob. The caller's wrapped key must open it.",
        "parameters": parameters([blob_key_header()]),
        "requestBody": {"required": true, "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["public-keys"], "properties": {
                "public-keys": {"type": "string", "maxLength": limits.max_public_keys_bytes,
                    "description": "As on upload: JSON object of recipient id -> RSA public key PEM. May be a file part."},
                BLOB_KEY_FIELD: {"type": "string",
                    "description": format!("The caller's wrapped key, unless sent in {BLOB_KEY_HEADER}.")}
            }}},
            "application/x-www-form-urlencoded": {"schema": {"type": "object", "required": ["public-keys"], "properties": {
                "public-keys": {"type": "string"}, BLOB_KEY_FIELD: {"type": "string"}
            }}}
        }},
        "responses": {
            "200": upload_response("The blob's data key wrapped for each named recipient (the upload's shape)."),
            "400": error("Missing or unusable wrapped key, malformed recipients, or invalid names."),
            "401": error(AUTH_FAILED),
            "403": error(WRONG_KEY),
            "404": error(BLOB_NOT_FOUND),
            "413": error("A field is over its limit."),
            "422": validation_error("Missing public-keys (FastAPI's shape)."),
            "429": error(THROTTLED),
            "502": error(BLOB_UNAUTHENTIC),
            "503": error(UNAVAILABLE)
        }
    })
}

fn components() -> Value {
    json!({
        "securitySchemes": {
            "decryptionKey": {"type": "apiKey", "in": "header", "name": "x-decryption-key"},
            "salt": {"type": "apiKey", "in": "header", "name": "x-salt"},
            "comparisonKey": {"type": "apiKey", "in": "header", "name": "x-comparison-key"}
        },
        "headers": {REQUEST_ID_HEADER: {"schema": {"type": "string"}}},
        "schemas": {
            "Error": {"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}},
            "ValidationError": {"type": "object", "properties": {"detail": {"type": "array", "items": {
                "type": "object", "properties": {
                    "type": {"const": "missing"}, "loc": {"type": "array", "items": {"type": "string"}},
                    "msg": {"type": "string"}, "input": {"type": "null"}}}}}},
            "PublicKey": {"type": "object", "required": ["public_key"], "properties": {"public_key": {"type": "string"}}},
            "UploadResponse": {"type": "object", "required": ["filename", "decryption_keys", "file_name", "keys"],
                "properties": {
                    "filename": {"type": "string"},
                    "decryption_keys": {"type": "object", "additionalProperties": {"type": "string",
                        "description": "Standard base64 of RSA-OAEP(SHA-256) over the data key's text."}},
                    "file_name": {"type": "string"},
                    "keys": {"type": "object", "additionalProperties": {"type": "string"}}
                }}
        }
    })
}

/// The container and blob path parameters, then `headers`.
fn parameters(headers: impl IntoIterator<Item = Value>) -> Vec<Value> {
    let path = [
        json!({"name": "container", "in": "path", "required": true,
         "description": "Container name: 3-63 lowercase letters, digits and single hyphens.",
         "schema": {"type": "string", "pattern": "^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$"}}),
        json!({"name": "blob", "in": "path", "required": true,
         "description": "Blob name, 1-1024 characters; may contain '/' (sent as is, not as %2F). \
                         No empty, '.' or '..' segments, no control characters.",
         "schema": {"type": "string"}}),
    ];
    path.into_iter().chain(headers).collect()
}

fn blob_key_header() -> Value {
    json!({"name": BLOB_KEY_HEADER, "in": "header", "required": false,
        "description": format!("The wrapped key (base64 RSA-OAEP), instead of the `{BLOB_KEY_FIELD}` form field."),
        "schema": {"type": "string"}})
}

fn range_header() -> Value {
    json!({"name": "Range", "in": "header", "required": false,
        "description": "One byte range: bytes=a-b, bytes=a- or bytes=-n. Several ranges, malformed \
                        ranges and ranges on Fernet blobs get the whole body.",
        "schema": {"type": "string"}})
}

fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn validation_error(description: &str) -> Value {
    json!({"description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ValidationError"}}}})
}

fn upload_response(description: &str) -> Value {
    json!({"description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/UploadResponse"}}}})
}

/// A self-contained page that renders `/openapi.json` (no scripts or styles from elsewhere).
pub const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>blobprox API</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h2{border-bottom:1px solid #ddd;margin-top:2rem}.method{font-weight:bold;text-transform:uppercase;
display:inline-block;min-width:4rem}code{background:#f4f4f4;padding:0 .2rem}table{border-collapse:collapse}
td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}
</style></head><body><h1>blobprox API</h1><p id="intro"></p><div id="paths">Loading /openapi.json…</div>
<script>
const esc = s => String(s ?? "").replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
fetch("openapi.json").then(r => r.json()).then(doc => {
  document.getElementById("intro").textContent = doc.info.description;
  let html = "";
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      html += `<h2><span class="method">${esc(method)}</span> <code>${esc(path)}</code></h2><p>${esc(op.summary)}</p>`;
      const params = op.parameters || [];
      if (params.length) {
        html += "<table><tr><th>parameter</th><th>in</th><th>description</th></tr>";
        for (const p of params) html += `<tr><td><code>${esc(p.name)}</code></td><td>${esc(p.in)}</td><td>${esc(p.description)}</td></tr>`;
        html += "</table>";
      }
      const form = op.requestBody?.content?.["multipart/form-data"]?.schema?.properties;
      if (form) {
        html += "<p>Form fields:</p><table>";
        for (const [name, f] of Object.entries(form)) html += `<tr><td><code>${esc(name)}</code></td><td>${esc(f.description)}</td></tr>`;
        html += "</table>";
      }
      html += "<p>Responses:</p><table>";
      for (const [code, r] of Object.entries(op.responses)) html += `<tr><td>${esc(code)}</td><td>${esc(r.description)}</td></tr>`;
      html += "</table>";
    }
  }
  document.getElementById("paths").innerHTML = html;
});
</script></body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_limits_come_from_the_running_configuration() {
        let limits = Limits {
            max_public_keys_bytes: 1234,
            max_recipients: 7,
            ..Limits::default()
        };
        let paths = &document(&limits)["paths"];
        let form = |path: &str| {
            &paths[path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
                ["public-keys"]
        };
        assert_eq!(form("/upload/{container}/{blob}")["maxLength"], 1234);
        assert_eq!(form("/share/{container}/{blob}")["maxLength"], 1234);
        let description = form("/upload/{container}/{blob}")["description"]
            .as_str()
            .unwrap();
        assert!(
            description.contains("at most 7 recipients"),
            "{description}"
        );
    }
}
