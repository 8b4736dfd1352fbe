"""The Saathii API's writes, statement by statement, as its routes make them
(saathiiapp/saathii_backend_fastapi, commit 34c75ee: api/routes/auth.py, status.py,
call.py, wallet.py, user.py, api/utils/badge_manager.py), for the tests and the storms'
traffic ("as the real API") to replay beside the workers, on a database built by
saathii_api.sql.

What the routes do, kept: every statement on its own (autocommit, no transaction), in the
routes' order, with the routes' checks and their gaps (no lock between a check and the
write it guards; a purchase sets an absolute balance). One thing differs, so that the
tests can run on a logical clock: where a statement says now() (or a column defaults to
it), the API's clock is the `now` given. `date.today()` is the API server's date: the
UTC date of `now` here.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import psycopg

#: api/schemas/call.py's DEFAULT_CALL_RATES, coins a minute.
RATES = {"audio": 10, "video": 60}
#: api/utils/badge_manager.py's BADGE_RATES['basic'], rupees a minute.
BASIC = {"audio": Decimal("1.00"), "video": Decimal("6.00")}


class ApiError(Exception):
    """What the route answered instead of doing its work: an HTTP status."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status


@dataclass
class SaathiiApi:
    conn: psycopg.Connection  # autocommit, dict rows
    redis: object | None = None  # a redis.Redis, for the call hashes

    def _one(self, sql: str, *params):
        return self.conn.execute(sql, params).fetchone()

    # auth.py -------------------------------------------------------------------------

    def register(self, username: str, phone: str, role: str, now: datetime) -> int:
        """POST /auth/both/register."""
        if self._one("SELECT * FROM users WHERE phone=%s", phone):
            raise ApiError(409, "User already exists")
        user = self._one(
            "INSERT INTO users (username, phone, sex, dob, bio, interests, preferred_language,"
            " created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING *",
            username, phone, None, "1995-05-05", None, None, None, now)["user_id"]
        self.conn.execute("INSERT INTO user_roles (user_id, role) VALUES (%s,%s)", [user, role])
        if role == "listener":
            self.conn.execute(  # assign_basic_badge_for_today
                "INSERT INTO listener_badges (listener_id, date, badge, audio_rate_per_minute,"
                " video_rate_per_minute, assigned_at) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (listener_id, date) DO UPDATE SET badge = EXCLUDED.badge,"
                " audio_rate_per_minute = EXCLUDED.audio_rate_per_minute,"
                " video_rate_per_minute = EXCLUDED.video_rate_per_minute, updated_at = %s"
                " RETURNING *",
                [user, self.today(now), "basic", BASIC["audio"], BASIC["video"], now, now])
            self.conn.execute(
                "INSERT INTO listener_profile (listener_id, verification_status, audio_file_url,"
                " listener_allowed_call_type, listener_audio_call_enable,"
                " listener_video_call_enable, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [user, False, None, ["audio", "video"], True, True, now, now])
        self.conn.execute(
            "INSERT INTO user_status (user_id, is_online, last_seen, is_busy, is_active,"
            " updated_at, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [user, True, now, False, True, now, now])
        self.conn.execute(
            "INSERT INTO user_wallets (user_id, balance_coins, withdrawable_money, created_at,"
            " updated_at) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_id) DO NOTHING",
            [user, 0, 0.00, now, now])
        return user

    def login(self, user: int, now: datetime) -> None:
        """POST /auth/both/otp/verify, for a registered phone."""
        self.conn.execute("UPDATE user_status SET is_online = TRUE, last_seen = %s,"
                          " updated_at = %s WHERE user_id = %s", [now, now, user])

    def logout(self, user: int, now: datetime) -> None:
        """POST /auth/both/logout."""
        self.conn.execute("UPDATE user_status SET is_online = FALSE, last_seen = %s,"
                          " updated_at = %s WHERE user_id = %s", [now, now, user])

    # status.py -----------------------------------------------------------------------

    def heartbeat(self, user: int, now: datetime) -> None:
        """POST /both/status/heartbeat: last_seen only."""
        self.conn.execute("UPDATE user_status SET last_seen = %s, updated_at = %s"
                          " WHERE user_id = %s", [now, now, user])

    def set_busy(self, user: int, busy: bool, wait_time: int | None, now: datetime) -> None:
        """set_user_busy_status."""
        self.conn.execute("UPDATE user_status SET is_busy = %s, wait_time = %s,"
                          " updated_at = %s WHERE user_id = %s", [busy, wait_time, now, user])
        if busy:
            self.conn.execute("UPDATE user_status SET is_online = TRUE, last_seen = %s,"
                              " updated_at = %s WHERE user_id = %s", [now, now, user])

    # wallet.py -----------------------------------------------------------------------

    def buy(self, user: int, coins: int, money: Decimal, now: datetime) -> None:
        """POST /customer/wallet/coins/add: read the balance, set balance + coins (an
        absolute value), then the ledger row. (The route answers 500 after writing.)"""
        wallet = self._one("SELECT wallet_id, balance_coins FROM user_wallets"
                           " WHERE user_id = %s", user)
        self.conn.execute("UPDATE user_wallets SET balance_coins = %s, updated_at = %s"
                          " WHERE wallet_id = %s",
                          [wallet["balance_coins"] + coins, now, wallet["wallet_id"]])
        self.conn.execute(
            "INSERT INTO user_transactions (wallet_id, tx_type, coins_change, money_change,"
            " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s)"
            " RETURNING transaction_id, created_at",
            [wallet["wallet_id"], "purchase", coins, money, now, now])

    def move_coins(self, user: int, coins: int, operation: str, tx_type: str,
                   now: datetime) -> None:
        """call.py's update_user_coin_balance."""
        if operation == "subtract":
            balance = self._one("SELECT balance_coins FROM user_wallets WHERE user_id = %s",
                                user)["balance_coins"] or 0
            if balance < coins:
                raise ApiError(400, "Insufficient coins")
            self.conn.execute("UPDATE user_wallets SET balance_coins = balance_coins - %s,"
                              " updated_at = %s WHERE user_id = %s", [coins, now, user])
            change = -coins
        else:
            self.conn.execute("UPDATE user_wallets SET balance_coins = balance_coins + %s,"
                              " updated_at = %s WHERE user_id = %s", [coins, now, user])
            tx_type, change = "earn", coins
        wallet = self._one("SELECT wallet_id FROM user_wallets WHERE user_id = %s", user)
        if wallet:
            self.conn.execute("INSERT INTO user_transactions (wallet_id, tx_type, coins_change,"
                              " created_at) VALUES (%s, %s, %s, %s)",
                              [wallet["wallet_id"], tx_type, change, now])

    # call.py -------------------------------------------------------------------------

    def available(self, user: int) -> bool:
        return self._one("SELECT COUNT(*) AS n FROM user_calls WHERE (user_id = %s OR"
                         " listener_id = %s) AND status = 'ongoing'", user, user)["n"] == 0

    def start_call(self, caller: int, listener: int, call_type: str, now: datetime) -> int:
        """POST /customer/calls/start."""
        if not self._one("SELECT EXISTS (SELECT 1 FROM user_roles WHERE user_id = %s"
                         " AND role = 'customer') AS ok", caller)["ok"]:
            raise ApiError(403, "Only customers can start calls")
        if not self._one("SELECT user_id, username FROM users WHERE user_id = %s", listener):
            raise ApiError(404, "Listener not found")
        profile = self._one("SELECT verification_status FROM listener_profile"
                            " WHERE listener_id = %s", listener)
        if not (profile and profile["verification_status"]):
            raise ApiError(403, "Cannot start call with unverified listener")
        if not self.available(listener):
            raise ApiError(409, "Listener is currently busy")
        if not self.available(caller):
            raise ApiError(409, "You are already on a call")
        self.conn.execute("INSERT INTO user_wallets (user_id, balance_coins, created_at)"
                          " VALUES (%s, 0, %s) ON CONFLICT (user_id) DO NOTHING", [caller, now])
        balance = self._one("SELECT balance_coins FROM user_wallets WHERE user_id = %s",
                            caller)["balance_coins"] or 0
        rate = RATES[call_type]
        if balance < rate:
            raise ApiError(400, "Insufficient coins")
        wait_time = balance // rate
        self.move_coins(caller, rate, "subtract", "spend", now)
        call = self._one(
            "INSERT INTO user_calls (user_id, listener_id, call_type, status, coins_spent,"
            " listener_money_earned, start_time) VALUES (%s, %s, %s, 'ongoing', %s, 0, %s)"
            " RETURNING call_id, coins_spent", caller, listener, call_type, rate, now)["call_id"]
        for user in (caller, listener):
            self.set_busy(user, True, wait_time, now)
        if self.redis is not None:
            key = f"call:{call}"
            self.redis.hset(key, mapping={
                "user_id": str(caller), "listener_id": str(listener), "call_type": call_type,
                "start_time": str(int(now.timestamp())), "coins_spent": str(rate)})
            self.redis.expire(key, 7200)
        return call

    def end_call(self, call_id: int, user: int, now: datetime, *, fixed: bool,
                 reason: str | None = None, meanwhile=None) -> int:
        """POST /both/calls/end. As written it fails on every call (datetime.utcnow(), a
        naive time, minus the call's aware start_time: HTTP 500) before it writes anything;
        `fixed` is the route with that one line made aware. The listener's pay, in whole
        rupees, credited as coins to balance_coins. Between its read of the call and its
        write of the end the route awaits the listener's rate: `meanwhile()` runs there,
        for a test to put a tick in that gap."""
        call = self._one("SELECT * FROM user_calls WHERE call_id = %s AND (user_id = %s OR"
                         " listener_id = %s) AND status = 'ongoing'", call_id, user, user)
        if not call:
            raise ApiError(404, "Call not found or already ended")
        if not fixed:
            raise ApiError(500, "can't subtract offset-naive and offset-aware datetimes")
        duration = int((now - call["start_time"]).total_seconds())
        paid = call["coins_spent"] // RATES[call["call_type"]]
        badge = self._one("SELECT * FROM listener_badges WHERE listener_id = %s AND date = %s",
                          call["listener_id"], self.today(now))
        rate = (badge[f"{call['call_type']}_rate_per_minute"] if badge
                else BASIC[call["call_type"]])
        earnings = int(float(rate) * paid)
        if meanwhile is not None:
            meanwhile()
        try:
            self.conn.execute(
                "UPDATE user_calls SET end_time = %s, duration_seconds = %s,"
                " duration_minutes = %s, listener_money_earned = %s, status = %s,"
                " updated_at = %s WHERE call_id = %s",
                [now, duration, max(1, duration // 60), earnings, reason or "completed", now,
                 call_id])
        except psycopg.errors.CheckViolation as error:  # a tick ended it since the read
            raise ApiError(500, str(error).splitlines()[0]) from error
        self.move_coins(call["listener_id"], earnings, "add", "earn", now)
        for party in (call["user_id"], call["listener_id"]):
            self.set_busy(party, False, None, now)
        if self.redis is not None:
            self.redis.delete(f"call:{call_id}")
        return earnings

    # user.py, and an admin's ------------------------------------------------------------

    def delete_account(self, user: int, role: str, now: datetime) -> None:
        """DELETE /both/users/me: the request kept, the wallet's rows, the wallet, the user
        (the rest by ON DELETE CASCADE)."""
        details = self._one("SELECT username, phone FROM users WHERE user_id = %s", user)
        self.conn.execute("INSERT INTO user_delete_requests (user_id, username, phone, reason,"
                          " user_role, deleted_at, created_at) VALUES (%s, %s, %s, %s, %s,"
                          " %s, %s) RETURNING request_id",
                          [user, details["username"], details["phone"], None, role, now, now])
        wallet = self._one("SELECT wallet_id FROM user_wallets WHERE user_id=%s", user)
        if wallet:
            self.conn.execute("DELETE FROM user_transactions WHERE wallet_id=%s",
                              [wallet["wallet_id"]])
        self.conn.execute("DELETE FROM user_wallets WHERE user_id=%s", [user])
        self.conn.execute("DELETE FROM users WHERE user_id=%s", [user])

    def verify_listener(self, listener: int, now: datetime) -> None:
        self.conn.execute("UPDATE listener_profile SET verification_status = true,"
                          " verified_on = %s WHERE listener_id = %s", [now, listener])

    def deactivate(self, user: int) -> None:
        self.conn.execute("UPDATE user_status SET is_active = false WHERE user_id = %s", [user])

    @staticmethod
    def today(now: datetime):
        return now.astimezone(UTC).date()
