import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Metadata(_message.Message):
    __slots__ = ("Name", "Namespace", "Description", "Labels", "Expires", "Revision")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    Name: str
    Namespace: str
    Description: str
    Labels: _containers.ScalarMap[str, str]
    Expires: _timestamp_pb2.Timestamp
    Revision: str
    def __init__(self, Name: _Optional[str] = ..., Namespace: _Optional[str] = ..., Description: _Optional[str] = ..., Labels: _Optional[_Mapping[str, str]] = ..., Expires: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., Revision: _Optional[str] = ...) -> None: ...

class LockTarget(_message.Message):
    __slots__ = ("User", "Role", "Login", "Node", "MFADevice", "WindowsDesktop", "AccessRequest", "Device", "ServerID", "BotInstanceID", "JoinToken")
    USER_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LOGIN_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    MFADEVICE_FIELD_NUMBER: _ClassVar[int]
    WINDOWSDESKTOP_FIELD_NUMBER: _ClassVar[int]
    ACCESSREQUEST_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SERVERID_FIELD_NUMBER: _ClassVar[int]
    BOTINSTANCEID_FIELD_NUMBER: _ClassVar[int]
    JOINTOKEN_FIELD_NUMBER: _ClassVar[int]
    User: str
    Role: str
    Login: str
    Node: str
    MFADevice: str
    WindowsDesktop: str
    AccessRequest: str
    Device: str
    ServerID: str
    BotInstanceID: str
    JoinToken: str
    def __init__(self, User: _Optional[str] = ..., Role: _Optional[str] = ..., Login: _Optional[str] = ..., Node: _Optional[str] = ..., MFADevice: _Optional[str] = ..., WindowsDesktop: _Optional[str] = ..., AccessRequest: _Optional[str] = ..., Device: _Optional[str] = ..., ServerID: _Optional[str] = ..., BotInstanceID: _Optional[str] = ..., JoinToken: _Optional[str] = ...) -> None: ...

class LockSpecV2(_message.Message):
    __slots__ = ("Target", "Message", "Expires", "CreatedAt", "CreatedBy")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    CREATEDAT_FIELD_NUMBER: _ClassVar[int]
    CREATEDBY_FIELD_NUMBER: _ClassVar[int]
    Target: LockTarget
    Message: str
    Expires: _timestamp_pb2.Timestamp
    CreatedAt: _timestamp_pb2.Timestamp
    CreatedBy: str
    def __init__(self, Target: _Optional[_Union[LockTarget, _Mapping]] = ..., Message: _Optional[str] = ..., Expires: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., CreatedAt: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., CreatedBy: _Optional[str] = ...) -> None: ...

class LockV2(_message.Message):
    __slots__ = ("Kind", "SubKind", "Version", "Metadata", "Spec")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBKIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    Kind: str
    SubKind: str
    Version: str
    Metadata: Metadata
    Spec: LockSpecV2
    def __init__(self, Kind: _Optional[str] = ..., SubKind: _Optional[str] = ..., Version: _Optional[str] = ..., Metadata: _Optional[_Union[Metadata, _Mapping]] = ..., Spec: _Optional[_Union[LockSpecV2, _Mapping]] = ...) -> None: ...
