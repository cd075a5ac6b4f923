from google.protobuf import empty_pb2 as _empty_pb2
from teleport_event_handler.protos.teleport.legacy.types import types_pb2 as _types_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class PingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PingResponse(_message.Message):
    __slots__ = ("ClusterName", "ServerVersion", "ProxyPublicAddr", "IsBoring")
    CLUSTERNAME_FIELD_NUMBER: _ClassVar[int]
    SERVERVERSION_FIELD_NUMBER: _ClassVar[int]
    PROXYPUBLICADDR_FIELD_NUMBER: _ClassVar[int]
    ISBORING_FIELD_NUMBER: _ClassVar[int]
    ClusterName: str
    ServerVersion: str
    ProxyPublicAddr: str
    IsBoring: bool
    def __init__(self, ClusterName: _Optional[str] = ..., ServerVersion: _Optional[str] = ..., ProxyPublicAddr: _Optional[str] = ..., IsBoring: _Optional[bool] = ...) -> None: ...
