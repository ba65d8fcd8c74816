//! A cluster's ACLs: DescribeAcls, CreateAcls and DeleteAcls (KIP-140,
//! prefixed patterns KIP-290) for topic and group resources, read into and
//! written from [`AclBinding`]s.
//!
//! A cluster without an authorizer answers SECURITY_DISABLED, kept apart
//! ([`AclError::SecurityDisabled`]) so the caller can say so once and go on.

use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{detail, Cluster, ClusterError, GroupError, Role};

/// Kafka's resource type codes (`ResourceType`) of the resources synced.
pub const RESOURCE_TOPIC: i8 = 2;
/// A consumer group.
pub const RESOURCE_GROUP: i8 = 3;
/// Pattern type codes (`PatternType`): one name exactly.
pub const PATTERN_LITERAL: i8 = 3;
/// Every name that starts with the resource name.
pub const PATTERN_PREFIXED: i8 = 4;
/// Operation codes (`AclOperation`).
pub const OPERATION_ALL: i8 = 2;
/// Read records (implies DESCRIBE).
pub const OPERATION_READ: i8 = 3;
/// Write records.
pub const OPERATION_WRITE: i8 = 4;
/// Describe a resource.
pub const OPERATION_DESCRIBE: i8 = 8;
/// Describe a resource's configs.
pub const OPERATION_DESCRIBE_CONFIGS: i8 = 10;
/// Permission codes (`AclPermissionType`): refuses.
pub const PERMISSION_DENY: i8 = 2;
/// Grants.
pub const PERMISSION_ALLOW: i8 = 3;
/// The filter code that matches any value of a field.
const MATCH_ANY: i8 = 1;

/// One ACL: a resource pattern and one access control entry, as Kafka's
/// `AclBinding`. Ordered so sets of them compare cheaply.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclBinding {
    /// [`RESOURCE_TOPIC`] or [`RESOURCE_GROUP`].
    pub resource_type: i8,
    /// The resource name, or its prefix.
    pub name: String,
    /// [`PATTERN_LITERAL`] or [`PATTERN_PREFIXED`].
    pub pattern: i8,
    /// Such as `User:alice`.
    pub principal: String,
    /// A host, or `*`.
    pub host: String,
    /// An operation code.
    pub operation: i8,
    /// [`PERMISSION_ALLOW`] or [`PERMISSION_DENY`].
    pub permission: i8,
}

impl AclBinding {
    /// The operation as Kafka's tools print it.
    pub fn operation_name(&self) -> &'static str {
        const NAMES: [&str; 15] = [
            "UNKNOWN",
            "ANY",
            "ALL",
            "READ",
            "WRITE",
            "CREATE",
            "DELETE",
            "ALTER",
            "DESCRIBE",
            "CLUSTER_ACTION",
            "DESCRIBE_CONFIGS",
            "ALTER_CONFIGS",
            "IDEMPOTENT_WRITE",
            "CREATE_TOKENS",
            "DESCRIBE_TOKENS",
        ];
        usize::try_from(self.operation)
            .ok()
            .and_then(|i| NAMES.get(i))
            .copied()
            .unwrap_or("UNKNOWN")
    }

    /// ALLOW or DENY.
    pub fn permission_name(&self) -> &'static str {
        match self.permission {
            PERMISSION_ALLOW => "ALLOW",
            PERMISSION_DENY => "DENY",
            _ => "UNKNOWN",
        }
    }

    /// The resource type, in lower case as in a sentence.
    pub fn resource_name(&self) -> &'static str {
        match self.resource_type {
            RESOURCE_TOPIC => "topic",
            RESOURCE_GROUP => "group",
            _ => "resource",
        }
    }

    /// literal or prefixed.
    pub fn pattern_name(&self) -> &'static str {
        match self.pattern {
            PATTERN_LITERAL => "literal",
            PATTERN_PREFIXED => "prefixed",
            _ => "unknown pattern",
        }
    }
}

/// An ACL request that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AclError {
    /// The cluster has no authorizer (`authorizer.class.name` unset).
    #[error("{role} cluster has no authorizer (SECURITY_DISABLED): ACLs are not synced")]
    SecurityDisabled {
        /// Which cluster.
        role: Role,
    },
    /// The broker refused the request or one of its ACLs.
    #[error("{role} cluster refused {api}: {error:?}{}", detail(message))]
    Refused {
        /// Which cluster.
        role: Role,
        /// DescribeAcls, CreateAcls or DeleteAcls.
        api: &'static str,
        /// The broker's error.
        error: ResponseError,
        /// The broker's own words; may be empty.
        message: String,
    },
    /// The request could not be sent or answered.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The source's groups, which tell what a prefixed group ACL covers,
    /// could not be listed.
    #[error("listing the groups prefixed group ACLs cover: {0}")]
    Groups(#[from] GroupError),
}

fn check(
    role: Role,
    api: &'static str,
    code: i16,
    message: Option<&StrBytes>,
) -> Result<(), AclError> {
    match code.err() {
        None => Ok(()),
        Some(ResponseError::SecurityDisabled) => Err(AclError::SecurityDisabled { role }),
        Some(error) => Err(AclError::Refused {
            role,
            api,
            error,
            message: message.map(|m| m.to_string()).unwrap_or_default(),
        }),
    }
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

/// DescribeAcls for every ACL on resources of `resource_type`, literal and
/// prefixed. The generated default filters are empty strings, which match
/// nothing: each is set to null.
fn describe_request(resource_type: i8) -> DescribeAclsRequest {
    DescribeAclsRequest::default()
        .with_resource_type_filter(resource_type)
        .with_resource_name_filter(None)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_pattern_type_filter(MATCH_ANY)
        .with_operation(MATCH_ANY)
        .with_permission_type(MATCH_ANY)
}

/// Every ACL on the cluster's resources of `resource_type`, literal and prefixed.
pub async fn describe_acls(
    cluster: &Cluster,
    resource_type: i8,
) -> Result<Vec<AclBinding>, AclError> {
    let request = describe_request(resource_type);
    let answer = cluster.send_any(request).await?;
    let role = cluster.role();
    check(
        role,
        "DescribeAcls",
        answer.error_code,
        answer.error_message.as_ref(),
    )?;
    Ok(answer
        .resources
        .into_iter()
        .flat_map(|resource| {
            let name = resource.resource_name.to_string();
            resource.acls.into_iter().map(move |acl| AclBinding {
                resource_type: resource.resource_type,
                name: name.clone(),
                pattern: resource.pattern_type,
                principal: acl.principal.to_string(),
                host: acl.host.to_string(),
                operation: acl.operation,
                permission: acl.permission_type,
            })
        })
        .collect())
}

/// Creates `acls` (creating one that exists is harmless).
pub async fn create_acls(cluster: &Cluster, acls: &[AclBinding]) -> Result<(), AclError> {
    if acls.is_empty() {
        return Ok(());
    }
    let creations = acls
        .iter()
        .map(|acl| {
            AclCreation::default()
                .with_resource_type(acl.resource_type)
                .with_resource_name(text(&acl.name))
                .with_resource_pattern_type(acl.pattern)
                .with_principal(text(&acl.principal))
                .with_host(text(&acl.host))
                .with_operation(acl.operation)
                .with_permission_type(acl.permission)
        })
        .collect();
    let answer = cluster
        .send_any(CreateAclsRequest::default().with_creations(creations))
        .await?;
    for result in &answer.results {
        check(
            cluster.role(),
            "CreateAcls",
            result.error_code,
            result.error_message.as_ref(),
        )?;
    }
    Ok(())
}

/// Deletes exactly `acls`: each filter names every field.
pub async fn delete_acls(cluster: &Cluster, acls: &[AclBinding]) -> Result<(), AclError> {
    if acls.is_empty() {
        return Ok(());
    }
    let filters = acls
        .iter()
        .map(|acl| {
            DeleteAclsFilter::default()
                .with_resource_type_filter(acl.resource_type)
                .with_resource_name_filter(Some(text(&acl.name)))
                .with_pattern_type_filter(acl.pattern)
                .with_principal_filter(Some(text(&acl.principal)))
                .with_host_filter(Some(text(&acl.host)))
                .with_operation(acl.operation)
                .with_permission_type(acl.permission)
        })
        .collect();
    let answer = cluster
        .send_any(DeleteAclsRequest::default().with_filters(filters))
        .await?;
    for result in &answer.filter_results {
        check(
            cluster.role(),
            "DeleteAcls",
            result.error_code,
            result.error_message.as_ref(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::{Decodable, Encodable};

    #[test]
    fn describe_filters_are_null_so_they_match_every_acl() {
        let request = describe_request(RESOURCE_TOPIC);
        let mut buf = bytes::BytesMut::new();
        request.encode(&mut buf, 3).unwrap();
        let sent = DescribeAclsRequest::decode(&mut buf.freeze(), 3).unwrap();
        assert_eq!(
            (
                sent.resource_name_filter,
                sent.principal_filter,
                sent.host_filter
            ),
            (None, None, None)
        );
    }

    #[test]
    fn a_cluster_without_an_authorizer_is_told_apart() {
        let code = ResponseError::SecurityDisabled.code();
        let error = check(Role::Target, "DescribeAcls", code, None).unwrap_err();
        assert!(matches!(
            error,
            AclError::SecurityDisabled { role: Role::Target }
        ));
        assert_eq!(
            error.to_string(),
            "target cluster has no authorizer (SECURITY_DISABLED): ACLs are not synced"
        );
        let refused = ResponseError::ClusterAuthorizationFailed.code();
        let message = StrBytes::from_static_str("no ALTER on the cluster");
        let error = check(Role::Target, "CreateAcls", refused, Some(&message)).unwrap_err();
        assert!(error.to_string().contains("CreateAcls"), "{error}");
        assert!(check(Role::Source, "DescribeAcls", 0, None).is_ok());
    }
}
