"""The example backend of docs/backends.md ("Write your own backend") through the shipped
contract suite, written exactly as a third party would: a subclass naming its factory."""

from django.test import TestCase

from django_authfw.testing import StorageContractTests

from ..dict_backend import DictStorage


class DictStorageContractTests(StorageContractTests, TestCase):
    storage_factory = DictStorage
