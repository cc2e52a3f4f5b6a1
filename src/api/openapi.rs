//! `GET /v1/openapi.json`: the REST gateway described as OpenAPI 3.0.
//!
//! Nothing here is written by hand that could drift: the paths come from the
//! RPC table ([`RPCS`], from which `rest::router` mounts the routes), and
//! the schemas are derived from the same protobuf descriptors the gateway's
//! JSON is generated from, following the proto3 JSON mapping: lowerCamelCase
//! names (the proto names are accepted too), 64-bit integers as strings,
//! enums by name, `Struct` as an object, `Timestamp` as an RFC 3339 string,
//! `Duration` as seconds with an `s` (`"3600s"`).

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use serde_json::{Map, Value, json};

use crate::api::rpcs::{ARCHIVE, NDJSON, RPCS, RpcSpec, Streaming};
use crate::proto::FILE_DESCRIPTOR_SET;

const PACKAGE: &str = "vecmem.v1";

/// The whole document.
pub fn document() -> Value {
    let mut schemas = Map::new();
    if let Ok(descriptors) = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET) {
        for file in descriptors.file.iter().filter(|f| f.package() == PACKAGE) {
            for message in &file.message_type {
                add_message(&mut schemas, PACKAGE, message);
            }
            for enumeration in &file.enum_type {
                add_enum(&mut schemas, PACKAGE, enumeration);
            }
        }
    }
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "description": "An error: the gRPC code name, a message, and for INVALID_ARGUMENT the fields at fault.",
            "properties": {
                "code": {"type": "string", "example": "INVALID_ARGUMENT"},
                "message": {"type": "string"},
                "field_violations": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"field": {"type": "string"}, "description": {"type": "string"}}
                }}
            },
            "required": ["code", "message"]
        }),
    );
    let mut paths = Map::new();
    for spec in RPCS {
        let entry = paths
            .entry(spec.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[spec.http_method.openapi_name()] = operation(spec);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "vecmem REST gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every MemoryService and NamespaceService call over HTTP/JSON. Bodies follow the proto3 JSON mapping of the messages in proto/vecmem/v1 (field names in lowerCamelCase or as in the proto; 64-bit integers as strings). Send an API key as `authorization: Bearer KEY` or `x-api-key: KEY` when the server has keys configured."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}
            }
        },
        "security": [{"bearer": []}, {"apiKey": []}, {}]
    })
}

fn operation(spec: &RpcSpec) -> Value {
    let error = |description: &str| {
        json!({"description": description, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}})
    };
    // A streamed side is NDJSON: one JSON document of its message a line.
    let content = |streamed: bool, message: &str| {
        let media = if streamed { NDJSON } else { "application/json" };
        json!({media: {"schema": {"$ref": schema_ref(message)}}})
    };
    let answer = match spec.streaming {
        Streaming::Archive => json!({ARCHIVE: {"schema": {"type": "string", "format": "binary"}}}),
        streaming => content(streaming == Streaming::Server, spec.response),
    };
    let mut operation = json!({
        "operationId": spec.name,
        "summary": format!("{} (gRPC {}/{})", spec.name, spec.service, spec.name),
        "responses": {
            "200": {"description": "OK", "content": answer},
            "400": error("INVALID_ARGUMENT: the body or a field is wrong"),
            "401": error("UNAUTHENTICATED: no or an unknown API key"),
            "403": error("PERMISSION_DENIED: the key may not do this for the tenant"),
            "404": error("NOT_FOUND: unknown namespace"),
            "429": error("RESOURCE_EXHAUSTED: shed; retry after Retry-After seconds"),
            "503": error("UNAVAILABLE: the backend is unavailable; retry after Retry-After seconds"),
            "504": error("DEADLINE_EXCEEDED")
        }
    });
    let mut parameters = vec![json!({
        "name": "grpc-timeout", "in": "header", "required": false,
        "schema": {"type": "string", "pattern": "^[0-9]{1,8}[HMSmun]$"},
        "description": "The call's deadline, as gRPC sends it (`500m` is 500 ms); past it the answer is 504."
    })];
    if spec.path.contains("{namespace}") {
        parameters.push(json!({
            "name": "namespace", "in": "path", "required": true,
            "schema": {"type": "string"},
            "description": "The namespace; a body may repeat it but not contradict it."
        }));
    }
    if spec.streaming == Streaming::Client {
        parameters.push(json!({
            "name": "tenant", "in": "query", "required": true,
            "schema": {"type": "string"},
            "description": "The tenant the stream writes to."
        }));
        parameters.push(json!({
            "name": "skip_invalid", "in": "query", "required": false,
            "schema": {"type": "boolean", "default": false},
            "description": "Skip invalid memories (reported in `rejections`) instead of failing at the first."
        }));
    }
    operation["parameters"] = Value::Array(parameters);
    if let Some(request) = spec.body {
        operation["requestBody"] = json!({"required": true,
            "content": content(spec.streaming == Streaming::Client, request)});
    }
    operation
}

fn schema_ref(message: &str) -> String {
    format!("#/components/schemas/{PACKAGE}.{message}")
}

fn add_message(schemas: &mut Map<String, Value>, scope: &str, message: &DescriptorProto) {
    let name = format!("{scope}.{}", message.name());
    let mut properties = Map::new();
    for field in &message.field {
        properties.insert(field.json_name().to_owned(), field_schema(field));
    }
    schemas.insert(
        name.clone(),
        json!({"type": "object", "properties": properties}),
    );
    for nested in &message.nested_type {
        add_message(schemas, &name, nested);
    }
    for enumeration in &message.enum_type {
        add_enum(schemas, &name, enumeration);
    }
}

fn add_enum(schemas: &mut Map<String, Value>, scope: &str, enumeration: &EnumDescriptorProto) {
    let values: Vec<&str> = enumeration.value.iter().map(|v| v.name()).collect();
    schemas.insert(
        format!("{scope}.{}", enumeration.name()),
        json!({"type": "string", "enum": values}),
    );
}

fn field_schema(field: &FieldDescriptorProto) -> Value {
    let single = match field.r#type() {
        Type::Double | Type::Float => json!({"type": "number"}),
        Type::Int64 | Type::Uint64 | Type::Fixed64 | Type::Sfixed64 | Type::Sint64 => {
            json!({"type": "string", "format": "int64"})
        }
        Type::Int32 | Type::Uint32 | Type::Fixed32 | Type::Sfixed32 | Type::Sint32 => {
            json!({"type": "integer"})
        }
        Type::Bool => json!({"type": "boolean"}),
        Type::String => json!({"type": "string"}),
        Type::Bytes => json!({"type": "string", "format": "byte"}),
        Type::Enum => {
            json!({"$ref": format!("#/components/schemas/{}", field.type_name().trim_start_matches('.'))})
        }
        Type::Message | Type::Group => match field.type_name() {
            ".google.protobuf.Struct" => json!({"type": "object", "additionalProperties": true}),
            ".google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
            ".google.protobuf.Duration" => {
                json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$", "example": "3600s"})
            }
            ".google.protobuf.Value" => json!({}),
            other => {
                json!({"$ref": format!("#/components/schemas/{}", other.trim_start_matches('.'))})
            }
        },
    };
    if field.label() == Label::Repeated {
        json!({"type": "array", "items": single})
    } else {
        single
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves_and_every_route_is_described() {
        let document = document();
        let schemas = document["components"]["schemas"]
            .as_object()
            .expect("schemas");
        let text = document.to_string();
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap_or_default();
            assert!(schemas.contains_key(name), "dangling $ref {name}");
        }
        for spec in RPCS {
            let method = spec.http_method.openapi_name();
            assert!(
                document["paths"][spec.path][method].is_object(),
                "{method} {}",
                spec.path
            );
        }
        // proto3 JSON names: lowerCamelCase, 64-bit integers as strings.
        let count = &schemas["vecmem.v1.CountResponse"]["properties"]["count"];
        assert_eq!(count["type"], "string");
        assert!(schemas["vecmem.v1.GetResponse"]["properties"]["missingIds"].is_object());
    }
}
