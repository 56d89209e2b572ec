"""SIPp scenarios for a SIP trunk that receives our outbound INVITEs (SIPp as the UAS)."""

from __future__ import annotations

_RINGING = """
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0
    ]]>
  </send>
"""

_OK = """
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=trunk 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
"""


def _final(code: int, reason: str, extra: str = "") -> str:
    return f"""
  <send>
    <![CDATA[
      SIP/2.0 {code} {reason}
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]{extra}
      Content-Length: 0
    ]]>
  </send>
  <recv request="ACK"/>
"""


def _wrap(name: str, body: str) -> str:
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="{name}">
{body}
</scenario>
"""


ANSWER = _wrap("trunk answers", '  <recv request="INVITE"/>' + _RINGING + _OK)
BUSY = _wrap("trunk busy", '  <recv request="INVITE"/>' + _final(486, "Busy Here"))
# Rings until we CANCEL: 200 to the CANCEL, 487 to the INVITE, then our ACK.
NO_ANSWER = _wrap(
    "trunk no answer",
    '  <recv request="INVITE"/>'
    + _RINGING
    + """
  <recv request="CANCEL"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
  <send>
    <![CDATA[
      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      CSeq: 1 INVITE
      Content-Length: 0
    ]]>
  </send>
  <recv request="ACK"/>
""",
)


def challenge(expected_response: str) -> str:
    """Challenges with 407; the second INVITE must carry Proxy-Authorization with the digest
    response the test computed independently (RFC 2617, no qop)."""
    return _wrap(
        "trunk challenges",
        '  <recv request="INVITE"/>'
        + _final(407, "Proxy Authentication Required",
                 '\n      Proxy-Authenticate: Digest realm="trunk", nonce="4f1d2c9a"')
        + f"""
  <recv request="INVITE">
    <action>
      <ereg regexp="response=.{expected_response}." search_in="hdr" header="Proxy-Authorization:"
            check_it="true" assign_to="digest"/>
    </action>
  </recv>
  <Reference variables="digest"/>
"""
        + _OK,
    )
