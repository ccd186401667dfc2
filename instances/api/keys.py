"""SSH keys and API tokens of the authenticated user. Another user's key is a 404."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gpucloud.errors import error_responses
from instances.access import sshkeys, tokens
from instances.errors import TokenNeedsSession
from instances.models import ApiToken, SSHKey


class SSHKeyOutput(serializers.ModelSerializer):
    class Meta:
        model = SSHKey
        fields = ("id", "name", "key_type", "bits", "fingerprint", "public_key", "created_at")


class SSHKeyInput(serializers.Serializer):
    name = serializers.CharField(max_length=64, required=False, allow_blank=True)
    public_key = serializers.CharField(max_length=sshkeys.MAX_KEY_CHARS, trim_whitespace=True)


class TokenOutput(serializers.ModelSerializer):
    class Meta:
        model = ApiToken
        fields: tuple[str, ...] = ("id", "name", "prefix", "created_at", "last_used_at", "expires_at")


class TokenCreated(TokenOutput):
    key = serializers.CharField(help_text="The token itself. Shown once: it is stored only as a hash.")

    class Meta(TokenOutput.Meta):
        fields: tuple[str, ...] = (*TokenOutput.Meta.fields, "key")


class TokenInput(serializers.Serializer):
    name = serializers.CharField(max_length=64, required=False, allow_blank=True)
    expires_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="When the token stops working; empty: when revoked."
    )


class SSHKeyListApi(generics.ListAPIView):
    serializer_class = SSHKeyOutput

    def get_queryset(self) -> QuerySet[SSHKey]:
        return sshkeys.sshkey_list(user=self.request.user)

    @extend_schema(
        summary="List my SSH public keys", tags=["ssh-keys"], responses={200: SSHKeyOutput, **error_responses(400)}
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Add an SSH public key",
        description="Parsed for real: type, size and SHA256 fingerprint; RSA under 2048 bits and DSA are refused.",
        tags=["ssh-keys"],
        request=SSHKeyInput,
        responses={201: SSHKeyOutput, **error_responses(400)},
    )
    def post(self, request: Request) -> Response:
        data = SSHKeyInput(data=request.data)
        data.is_valid(raise_exception=True)
        key = sshkeys.sshkey_create(user=request.user, **data.validated_data)
        return Response(SSHKeyOutput(key).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Delete one of my SSH keys (`?id=` id or fingerprint)",
        operation_id="gpu_ssh_keys_destroy_by_query",
        description="The same as `DELETE /api/gpu/ssh-keys/{key_id}`.",
        tags=["ssh-keys"],
        parameters=[OpenApiParameter("id", OpenApiTypes.STR, required=True, description="Id or SHA256 fingerprint.")],
        responses={204: None, **error_responses(400, 404)},
    )
    def delete(self, request: Request) -> Response:
        query = KeyRefInput(data=request.query_params)
        query.is_valid(raise_exception=True)
        sshkeys.sshkey_delete(user=request.user, key_id=query.validated_data["id"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class KeyRefInput(serializers.Serializer):
    id = serializers.CharField(max_length=128)


class SSHKeyDetailApi(APIView):
    @extend_schema(
        summary="One of my SSH keys (by id or fingerprint)",
        tags=["ssh-keys"],
        responses={200: SSHKeyOutput, **error_responses(404)},
    )
    def get(self, request: Request, key_id: str) -> Response:
        return Response(SSHKeyOutput(sshkeys.sshkey_get(user=request.user, key_id=key_id)).data)

    @extend_schema(
        summary="Delete one of my SSH keys",
        description="Running instances keep the keys they were launched with.",
        tags=["ssh-keys"],
        responses={204: None, **error_responses(404)},
    )
    def delete(self, request: Request, key_id: str) -> Response:
        sshkeys.sshkey_delete(user=request.user, key_id=key_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenListApi(generics.ListAPIView):
    serializer_class = TokenOutput

    def get_queryset(self) -> QuerySet[ApiToken]:
        return tokens.token_list(user=self.request.user)

    @extend_schema(
        summary="List my active API tokens", tags=["tokens"], responses={200: TokenOutput, **error_responses(400)}
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Make an API token",
        description="The answer holds the key once; only its SHA-256 is kept. From a signed-in "
        "session only (the browsable API): a request authenticated by an API token is a 403 "
        "`instances:token-needs-session`, so a leaked token cannot make one that survives its revocation.",
        tags=["tokens"],
        request=TokenInput,
        responses={201: TokenCreated, **error_responses(400)},
    )
    def post(self, request: Request) -> Response:
        if isinstance(request.auth, tokens.TokenAuth):
            raise TokenNeedsSession()
        data = TokenInput(data=request.data)
        data.is_valid(raise_exception=True)
        token, key = tokens.token_create(
            user=request.user,
            name=data.validated_data.get("name", ""),
            expires_at=data.validated_data.get("expires_at"),
        )
        token.key = key  # type: ignore[attr-defined]
        return Response(TokenCreated(token).data, status=status.HTTP_201_CREATED)


class TokenDetailApi(APIView):
    @extend_schema(
        summary="Revoke one of my API tokens", tags=["tokens"], responses={204: None, **error_responses(404)}
    )
    def delete(self, request: Request, token_id: str) -> Response:
        tokens.token_revoke(user=request.user, token_id=token_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
